# clavitor.wireguardMesh: the management network of infrastructure.md, hub-and-spoke.
#
#   hub (zurich)  10.84.0.1/24, UDP 51820, one peer per spoke with its /32
#   each spoke    10.84.0.N/24, one peer: the hub (10.84.0.0/24, zurich.clavitor.com:51820,
#                 keepalive 25)
#
# Everything comes from the inventory through the pure helper ./lib/mesh.nix; the hub's peer list
# is never typed. The hub does not forward between spokes (no ip_forward): a spoke reaches the hub
# only, and the SOC reaches every node from the hub.
{
  config,
  lib,
  options,
  ...
}:
let
  inherit (lib)
    mkEnableOption
    mkOption
    mkIf
    mkMerge
    types
    ;
  cfg = config.clavitor.wireguardMesh;
  fleet = config.clavitor.fleet;
  mesh = fleet.mesh;
  host = fleet.host;
  isHub = host.role == "hub";
  secretFile = fleet.secretsDir + "/wg-${fleet.name}.age";
  hasSecret = builtins.pathExists secretFile;
  generatedKey = "/var/lib/wireguard/${mesh.interface}.key";
in
{
  imports = [ ./fleet.nix ];

  options.clavitor.wireguardMesh = {
    enable = mkEnableOption "the Clavitor WireGuard management mesh";

    privateKeyFile = mkOption {
      type = types.nullOr types.str;
      default = if hasSecret && options ? age then config.age.secrets.wireguard-private-key.path else null;
      defaultText = lib.literalExpression "config.age.secrets.wireguard-private-key.path (secrets/wg-<name>.age)";
      description = "This node's WireGuard private key file (an agenix secret).";
    };

    extraHubPeers = mkOption {
      type = types.listOf types.attrs;
      default = [ ];
      example = [
        {
          publicKey = "<SOC workstation public key>";
          allowedIPs = [ "10.84.0.200/32" ];
        }
      ];
      description = "Additional peers of the hub (SOC workstations), beyond the inventory's spokes.";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      # Without an agenix key yet, the node generates its own key at first boot (bootstrap: read it
      # with `wg show wg0 public-key`, put it into the inventory, then move it into agenix).
      warnings = lib.optional (cfg.privateKeyFile == null)
        "clavitor.wireguardMesh: no secrets/wg-${fleet.name}.age yet; ${fleet.name} generates its WireGuard key at first boot (${generatedKey}).";

      networking.wireguard.enable = true;
      networking.wireguard.interfaces.${mesh.interface} =
        let
          iface = mesh.interfaceFor fleet.name;
        in
        iface
        // {
          privateKeyFile = if cfg.privateKeyFile != null then cfg.privateKeyFile else generatedKey;
          generatePrivateKeyFile = cfg.privateKeyFile == null;
          peers = iface.peers ++ lib.optionals isHub cfg.extraHubPeers;
        };

      networking.firewall.allowedUDPPorts = lib.optional isHub mesh.port;
    }
    (lib.optionalAttrs (options ? age) {
      age.secrets = mkIf hasSecret {
        wireguard-private-key.file = secretFile;
      };
    })
  ]);
}
