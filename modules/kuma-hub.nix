# clavitor.kumaHub: Uptime Kuma on the SOC hub, reachable only on the hub's WireGuard address.
#
# Every node pushes its status to http://10.84.0.1:3001/api/push/<token> over the tunnel (the
# push URL of each node is the agenix secret secrets/kuma-push-<name>.age, loaded into its
# clavitor service). The push monitors are created once per node by the SOC: docs/operations.md,
# "Kuma push monitors".
{
  config,
  lib,
  ...
}:
let
  inherit (lib)
    mkEnableOption
    mkOption
    mkIf
    types
    ;
  cfg = config.clavitor.kumaHub;
  fleet = config.clavitor.fleet;
  host = fleet.host;
  wgIf = fleet.inventory.wireguard.interface;
in
{
  imports = [ ./fleet.nix ];

  options.clavitor.kumaHub = {
    enable = mkEnableOption "Uptime Kuma on the WireGuard hub";

    port = mkOption {
      type = types.port;
      default = 3001;
      description = "TCP port of Kuma on the hub's WireGuard address.";
    };

    pushUrlBase = mkOption {
      type = types.str;
      readOnly = true;
      default = "http://${host.wgAddress}:${toString cfg.port}/api/push/";
      description = "Prefix of every node's push URL (the token follows).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = host.role == "hub";
        message = "clavitor.kumaHub is meant for the WireGuard hub; ${fleet.name} is a ${host.role}.";
      }
    ];

    services.uptime-kuma = {
      enable = true;
      settings = {
        # Bind to the WireGuard address only (never 0.0.0.0).
        HOST = host.wgAddress;
        PORT = toString cfg.port;
        UPTIME_KUMA_HOST = host.wgAddress;
        UPTIME_KUMA_PORT = toString cfg.port;
      };
    };
    # The address exists once the tunnel is up (node.nix also sets net.ipv4.ip_nonlocal_bind).
    systemd.services.uptime-kuma = {
      wants = [ "wireguard-${wgIf}.service" ];
      after = [ "wireguard-${wgIf}.service" ];
    };

    # Reachable through the tunnel only; nothing is opened on the public side.
    networking.firewall.interfaces.${wgIf}.allowedTCPPorts = [ cfg.port ];
  };
}
