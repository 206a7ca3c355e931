# clavitor.node: the node stack of infrastructure.md on one fleet host.
#
#   public internet : TCP 80 + 443 only (Clavitor; ACME/TLS in-process)
#   WireGuard (wg0) : sshd on this node's 10.84.0.N:22, keys only (plus Kuma on the hub)
#   store           : 2 system generations kept, weekly GC
#
# Opinionated defaults use mkDefault so hosts/<name>/default.nix can override them.
#
# No SQLite integrity timer here: the clavitor binary schedules its own `PRAGMA integrity_check`
# and reports the result in its Kuma push (db_integrity), so a second schedule would only duplicate
# it (issue 7: "the binary's own schedule, not both").
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
    mkDefault
    types
    ;
  cfg = config.clavitor.node;
  fleet = config.clavitor.fleet;
  host = fleet.host;
  wgIf = fleet.inventory.wireguard.interface;

  secretFile = name: fleet.secretsDir + "/${name}-${fleet.name}.age";
  hasSecret = name: builtins.pathExists (secretFile name);
  # Replication (commercial, issue 14): this host's side of its pair, derived from the inventory.
  replicationSettings = (import ./lib/replication.nix fleet.inventory).settingsFor fleet.name;
  haveAgenix = options ? age;
  keep = toString cfg.keepGenerations;
in
{
  imports = [
    ./fleet.nix
    ./clavitor.nix
    ./wireguard-mesh.nix
    ./kuma-hub.nix
  ];

  options.clavitor.node = {
    enable = mkEnableOption "the Clavitor fleet node profile (firewall, WireGuard-only sshd, GC, Clavitor)";

    keepGenerations = mkOption {
      type = types.ints.positive;
      default = 2;
      description = "System generations kept (boot menu and profile); older ones are deleted weekly.";
    };

    adminKeys = mkOption {
      type = types.listOf types.str;
      default = map (a: a.sshKey) fleet.inventory.admins;
      defaultText = lib.literalExpression "map (a: a.sshKey) inventory.admins";
      description = "SSH public keys allowed to log in as root (over WireGuard only).";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      warnings =
        lib.optional (host.placeholderKeys or false)
          "clavitor: host ${fleet.name} still has PLACEHOLDER keys in hosts/inventory.nix; it is not deployable."
        ++ map (s: "clavitor: secret ${toString (secretFile s)} does not exist yet (see secrets/README.md).") (
          builtins.filter (s: !(hasSecret s)) [
            "wg"
            "master-key"
            "kuma-push"
          ]
        );

      networking.hostName = host.name;
      networking.domain = mkDefault fleet.inventory.domain;
      time.timeZone = mkDefault "UTC";

      # Firewall: the public side sees 80 and 443 only. SSH is opened on the WireGuard interface
      # only (and sshd binds only there); the hub's UDP 51820 is opened by wireguard-mesh.nix.
      networking.firewall = {
        enable = true;
        allowedTCPPorts = [
          80
          443
        ];
        interfaces.${wgIf}.allowedTCPPorts = [ 22 ];
      };

      services.openssh = {
        enable = true;
        openFirewall = false;
        listenAddresses = [
          {
            addr = host.wgAddress;
            port = 22;
          }
        ];
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
          PermitRootLogin = "prohibit-password";
          X11Forwarding = false;
        };
      };
      # sshd binds 10.84.0.N before wg0 may carry it: allow the bind, and order after the tunnel.
      boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind" = 1;
      systemd.services.sshd = {
        wants = [ "wireguard-${wgIf}.service" ];
        after = [ "wireguard-${wgIf}.service" ];
      };
      users.users.root.openssh.authorizedKeys.keys = cfg.adminKeys;
      users.mutableUsers = mkDefault false;

      # Keep 2 generations: the boot menu lists only the last two, and a weekly job deletes the
      # system profile's generations beyond the last two before collecting garbage (nix.gc alone
      # cannot say "keep 2").
      boot.loader.grub.configurationLimit = mkDefault cfg.keepGenerations;
      boot.loader.systemd-boot.configurationLimit = mkDefault cfg.keepGenerations;
      nix.gc.automatic = mkDefault false; # replaced by clavitor-prune-generations below
      nix.settings.auto-optimise-store = mkDefault true;
      systemd.services.clavitor-prune-generations = {
        description = "Delete system generations beyond the last ${keep}, then collect garbage";
        path = [ config.nix.package ];
        serviceConfig.Type = "oneshot";
        script = ''
          nix-env --profile /nix/var/nix/profiles/system --delete-generations +${keep}
          nix-store --gc
        '';
      };
      systemd.timers.clavitor-prune-generations = {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = mkDefault "weekly";
          Persistent = true;
          RandomizedDelaySec = "1h";
        };
      };

      # 10 GB disk, 512 MB RAM: bounded journal, compressed swap in RAM, no docs.
      services.journald.extraConfig = mkDefault ''
        SystemMaxUse=200M
        SystemKeepFree=1G
        MaxRetentionSec=30day
        RateLimitIntervalSec=30s
        RateLimitBurst=10000
      '';
      zramSwap.enable = mkDefault true;
      documentation.enable = mkDefault false;

      services.clavitor = {
        enable = mkDefault true;
        edition = mkDefault (host.edition or "community");
        # TLS in-process (infrastructure.md "No Caddy"): a Let's Encrypt certificate for the
        # node's name, HTTPS on :443, :80 redirects; the loopback listener stays for health checks.
        acme.domains = mkDefault (lib.optional (host ? fqdn) host.fqdn);
        # The owner's passkeys are bound to the node's public name, served over HTTPS.
        webauthn.rpId = mkDefault (host.fqdn or null);
        webauthn.origin = mkDefault (if host ? fqdn then "https://${host.fqdn}" else null);
        # The telemetry reports the age of the latest handshake with the hub.
        wireguardInterface = mkDefault wgIf;
        # Both sides' peer lists come from the inventory's `replication.backup` lines.
        replication = lib.optionalAttrs (replicationSettings != null) {
          enable = mkDefault true;
          settings = replicationSettings;
        };
      };

      clavitor.wireguardMesh.enable = mkDefault true;
      clavitor.kumaHub.enable = mkDefault (host.role == "hub");
    }

    # agenix secrets, declared only when the module is present and the file exists.
    (lib.optionalAttrs haveAgenix {
      age.secrets = mkMerge [
        (mkIf (hasSecret "master-key") {
          clavitor-master-key.file = secretFile "master-key";
        })
        (mkIf (hasSecret "kuma-push") {
          clavitor-kuma-push-url.file = secretFile "kuma-push";
        })
        (mkIf (hasSecret "replication-key") {
          clavitor-replication-key.file = secretFile "replication-key";
        })
        (mkIf (hasSecret "replication-transport-key") {
          clavitor-replication-transport-key.file = secretFile "replication-transport-key";
        })
      ];
      services.clavitor = mkMerge [
        (mkIf (hasSecret "master-key") {
          masterKeyFile = mkDefault config.age.secrets.clavitor-master-key.path;
        })
        # The node pushes its status to Kuma on the hub every 30 s (docs/operations.md).
        (mkIf (hasSecret "kuma-push") {
          kumaPushUrlFile = mkDefault config.age.secrets.clavitor-kuma-push-url.path;
          # The push goes to the hub's WireGuard address: the tunnel is the encryption.
          kumaAllowPlainHttp = mkDefault true;
        })
        (mkIf (hasSecret "replication-key") {
          replication.signingKeyFile = mkDefault config.age.secrets.clavitor-replication-key.path;
        })
        # A backup's HPKE transport secret (the vaults' data keys arrive sealed to it).
        (mkIf (hasSecret "replication-transport-key") {
          replication.transportKeyFile = mkDefault config.age.secrets.clavitor-replication-transport-key.path;
        })
      ];
    })
  ]);
}
