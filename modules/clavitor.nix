# services.clavitor: the Clavitor credential vault as a hardened systemd service.
# Style follows nixpkgs' vaultwarden and uptime-kuma modules.
#
# Only options backed by flags the binary has today are exposed; the option -> flag mapping is the
# pure function in ./lib/clavitor-args.nix (checked offline against `clavitor serve --help`).
# docs/operations.md lists which options arrive with which feature (WebAuthn, ...); until then
# `extraArgs` + `credentials` reach any new flag.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkEnableOption
    mkOption
    mkIf
    types
    literalExpression
    ;
  cfg = config.services.clavitor;
  clavitorArgs = import ./lib/clavitor-args.nix;
  tomlFormat = pkgs.formats.toml { };

  # Replication (commercial, issue 14): the POP's file, written from `replication.settings`. The
  # signing key is a LoadCredential= file; the file names it by systemd's credentials path (only
  # Exec lines expand %d).
  replicationFile = tomlFormat.generate "clavitor-replication.toml" (
    cfg.replication.settings
    // { signing_key_file = "/run/credentials/clavitor.service/replication-key"; }
    // lib.optionalAttrs (cfg.replication.transportKeyFile != null) {
      transport_key_file = "/run/credentials/clavitor.service/replication-transport-key";
    }
  );

  commercial = cfg.commercial;
  # The commercial binary's own flags (modules/lib/clavitor-args.nix, `commercialFlags`).
  commercialArgs = clavitorArgs.toCommercialArgs {
    inherit (commercial)
      tenantId
      licenseRevalidateAfterSecs
      auditRetentionDays
      vaultRetireGraceSecs
      ;
    licensePublicKey = if commercial.licensePublicKeyFile != null then "%d/license-public-key" else null;
    autoscopeLlmUrl = commercial.autoscope.llmUrl;
    autoscopeLlmKeyFile = if commercial.autoscope.llmKeyFile != null then "%d/autoscope-llm-key" else null;
    autoscopeLlmModel = commercial.autoscope.llmModel;
    autoscopeLlmTimeoutSecs = commercial.autoscope.llmTimeoutSecs;
  };

  # Files handed to the service with LoadCredential= (readable by root only on the host; the
  # dynamic user reads its private copy under %d = $CREDENTIALS_DIRECTORY).
  credentials =
    cfg.credentials
    // lib.optionalAttrs (cfg.masterKeyFile != null) { master-key = cfg.masterKeyFile; }
    // lib.optionalAttrs (cfg.kumaPushUrlFile != null) { kuma-push-url = cfg.kumaPushUrlFile; }
    // lib.optionalAttrs (cfg.telemetry.tokenFile != null) { telemetry-token = cfg.telemetry.tokenFile; }
    // lib.optionalAttrs (cfg.proxy.upstreamCaFile != null) { proxy-upstream-ca = cfg.proxy.upstreamCaFile; }
    // lib.optionalAttrs (cfg.acme.caFile != null) { acme-ca = cfg.acme.caFile; }
    // lib.optionalAttrs (cfg.tls.certFile != null) { tls-cert = cfg.tls.certFile; }
    // lib.optionalAttrs (cfg.tls.keyFile != null) { tls-key = cfg.tls.keyFile; }
    // lib.optionalAttrs (commercial.licensePublicKeyFile != null) {
      license-public-key = commercial.licensePublicKeyFile;
    }
    // lib.optionalAttrs (commercial.autoscope.llmKeyFile != null) {
      autoscope-llm-key = commercial.autoscope.llmKeyFile;
    }
    // lib.optionalAttrs (cfg.replication.enable && cfg.replication.signingKeyFile != null) {
      replication-key = cfg.replication.signingKeyFile;
    }
    // lib.optionalAttrs (cfg.replication.enable && cfg.replication.transportKeyFile != null) {
      replication-transport-key = cfg.replication.transportKeyFile;
    };

  args = clavitorArgs.toArgs {
    inherit (cfg)
      listen
      allowPlainHttp
      dataDir
      logFormat
      kumaIntervalSecs
      kumaAllowPlainHttp
      wireguardInterface
      ;
    masterKeyFile = if cfg.masterKeyFile != null then "%d/master-key" else null;
    acmeDomains = cfg.acme.domains;
    acmeContact = cfg.acme.contact;
    acmeDirectory = cfg.acme.directory;
    acmeCaFile = if cfg.acme.caFile != null then "%d/acme-ca" else null;
    tlsCert = if cfg.tls.certFile != null then "%d/tls-cert" else null;
    tlsKey = if cfg.tls.keyFile != null then "%d/tls-key" else null;
    tlsListen = cfg.acme.tlsListen;
    httpRedirectListen = cfg.acme.httpRedirectListen;
    kumaPushUrlFile = if cfg.kumaPushUrlFile != null then "%d/kuma-push-url" else null;
    telemetryHost = cfg.telemetry.host;
    telemetryTokenFile = if cfg.telemetry.tokenFile != null then "%d/telemetry-token" else null;
    telemetryFreq = cfg.telemetry.freq;
    popRegion = cfg.telemetry.popRegion;
    rpId = cfg.webauthn.rpId;
    origin = cfg.webauthn.origin;
    inherit (cfg.limits)
      maxConnections
      maxConnectionsPerIp
      bodyTimeoutSecs
      bodyMinRate
      ;
    inherit (cfg) kumaDiskDownPct auditSync;
    challengeTtlSecs = cfg.webauthn.challengeTtlSecs;
    proxyListen = cfg.proxy.listen;
    proxyMaxTunnels = cfg.proxy.maxTunnels;
    proxyMaxTunnelsPerIp = cfg.proxy.maxTunnelsPerIp;
    proxyUpstreamCa = if cfg.proxy.upstreamCaFile != null then "%d/proxy-upstream-ca" else null;
    proxyAllowPrivateUpstreams = cfg.proxy.allowPrivateUpstreams;
    proxyRate = cfg.proxy.rate;
    proxyBurst = cfg.proxy.burst;
    proxyIdleSecs = cfg.proxy.idleSecs;
    proxyLifetimeSecs = cfg.proxy.lifetimeSecs;
    proxyUpstreamIdleSecs = cfg.proxy.upstreamIdleSecs;
    proxyMaxRequestBytes = cfg.proxy.maxRequestBytes;
    proxyMaxResponseBytes = cfg.proxy.maxResponseBytes;
    proxyResolve = cfg.proxy.resolve;
    inherit (cfg) extensionSessionTtlSecs;
    inherit (cfg) maxOpenVaults vaultIdleSecs;
    # Commercial only, so not in the shared flag table (checked against either edition's help).
    extraArgs =
      lib.optionals (cfg.edition == "commercial") commercialArgs
      ++ lib.optional cfg.replication.enable "--replication-config=${replicationFile}"
      ++ cfg.extraArgs;
  };

  # Reading a kernel WireGuard interface (netlink) needs CAP_NET_ADMIN; granted only when the
  # telemetry reports a handshake age.
  capabilities = [ "CAP_NET_BIND_SERVICE" ] ++ lib.optional (cfg.wireguardInterface != null) "CAP_NET_ADMIN";

  healthCheck = pkgs.writeShellScriptBin "clavitor-health" ''
    # Exit 0 when this node's Clavitor answers GET /healthz with 2xx (bounded retries, ~30 s).
    exec ${pkgs.curl}/bin/curl --fail --silent --show-error --max-time 5 \
      --retry 5 --retry-delay 3 --retry-all-errors \
      ${lib.escapeShellArg cfg.healthCheckUrl}
  '';

  # "127.0.0.1:8080" -> "http://127.0.0.1:8080/healthz"; a wildcard listen is probed on loopback.
  listenHost = lib.head (lib.splitString ":" cfg.listen);
  listenPort = lib.last (lib.splitString ":" cfg.listen);
  probeHost =
    if lib.hasPrefix "[" cfg.listen then
      "[::1]"
    else if listenHost == "0.0.0.0" || listenHost == "" then
      "127.0.0.1"
    else
      listenHost;
in
{
  options.services.clavitor = {
    enable = mkEnableOption "Clavitor, the credential vault for AI agents";

    edition = mkOption {
      type = types.enum [
        "community"
        "commercial"
      ];
      default = "community";
      description = "Which build of Clavitor to run; selects the default of `package`.";
    };

    editionPackages = mkOption {
      type = types.attrsOf types.package;
      default = { };
      internal = true;
      description = "Packages per edition; the flake's nixosModules.clavitor fills this in.";
    };

    package = mkOption {
      type = types.package;
      default =
        cfg.editionPackages.${cfg.edition}
          or (throw "services.clavitor.package: no package for edition ${cfg.edition}; set it or use the flake's nixosModules.clavitor");
      defaultText = literalExpression "clavitor-flake.packages.\${system}.\${config.services.clavitor.edition}";
      description = "The Clavitor package (its `clavitor` binary is run).";
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:8080";
      example = "0.0.0.0:443";
      description = "Address and port to listen on (`--listen`).";
    };

    allowPlainHttp = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Serve plain HTTP on a non-loopback `listen` address (`--allow-plain-http`); only behind a
        TLS terminator you trust. The binary refuses a non-loopback plain listener otherwise.
      '';
    };

    dataDir = mkOption {
      type = types.str;
      default = "/var/lib/clavitor";
      readOnly = true;
      description = ''
        Data directory (`--data-dir`): node.db and one SQLite file per vault. Managed by systemd's
        StateDirectory= for the dynamic service user, hence fixed.
      '';
    };

    masterKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = literalExpression "config.age.secrets.clavitor-master-key.path";
      description = ''
        File holding the node master key (32 bytes), typically an agenix secret. It is handed to
        the service with LoadCredential= and passed as `--master-key-file=%d/master-key`, so it
        stays root-only on disk and never enters the Nix store. null: the binary's default,
        `<dataDir>/master.key`.
      '';
    };

    logFormat = mkOption {
      type = types.enum [
        "text"
        "json"
      ];
      default = "text";
      description = "Log format on stderr/journald (`--log-format`).";
    };

    acme = {
      domains = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "tokyo.clavitor.com" ];
        description = ''
          Domains to obtain a certificate for with ACME (`--acme-domain`, TLS-ALPN-01, renewed
          in-process, cached in `dataDir`/acme). Non-empty turns TLS on: HTTPS on `tlsListen`
          (default 0.0.0.0:443) and a redirect to https on `httpRedirectListen` (default
          0.0.0.0:80). `listen` stays a plain loopback listener for local health checks.
        '';
      };
      contact = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "soc@clavitor.com" ];
        description = "Contact e-mail addresses of the ACME account (`--acme-contact`).";
      };
      directory = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "staging";
        description = ''
          ACME directory (`--acme-directory`): `production` (Let's Encrypt, the binary's default
          when null), `staging`, or an https:// URL.
        '';
      };
      caFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/ssl/internal-acme-ca.pem";
        description = ''
          Extra root certificate(s) (PEM) to trust when talking to the ACME server
          (`--acme-ca-file`, loaded with LoadCredential=): a private ACME CA such as step-ca.
          Needs `domains`. Public, so it may be a store path.
        '';
      };
      tlsListen = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "0.0.0.0:443";
        description = ''
          Where HTTPS is served (`--tls-listen`), with ACME certificates or with `tls.certFile`;
          null: the binary's 0.0.0.0:443.
        '';
      };
      httpRedirectListen = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "off";
        description = ''
          Plain HTTP listener that redirects to https (`--http-redirect-listen`); null: the
          binary's 0.0.0.0:80; "off" disables it.
        '';
      };
    };

    tls = {
      certFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = literalExpression ''"''${config.security.acme.certs."tokyo.clavitor.com".directory}/fullchain.pem"'';
        description = ''
          Certificate chain (PEM) to serve HTTPS with instead of ACME (`--tls-cert`, loaded with
          LoadCredential=; needs `keyFile`, excludes `acme.domains`). HTTPS is served on
          `acme.tlsListen`; the redirect listener stays off unless `acme.httpRedirectListen` is
          set. The files are read when the service starts: whatever renews them must restart
          it (with nixpkgs' ACME: `security.acme.certs.<name>.reloadServices = [ "clavitor" ]`).
        '';
      };
      keyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = literalExpression ''"''${config.security.acme.certs."tokyo.clavitor.com".directory}/key.pem"'';
        description = ''
          Private key (PEM) of `certFile` (`--tls-key`, loaded with LoadCredential=, so it stays
          root-only on disk). Must not be in the Nix store.
        '';
      };
    };

    kumaPushUrlFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = literalExpression "config.age.secrets.clavitor-kuma-push-url.path";
      description = ''
        File holding the node's Uptime Kuma push URL (`http://10.84.0.1:3001/api/push/<token>`,
        a secret). Loaded with LoadCredential= as `kuma-push-url` and passed as
        `--kuma-push-url-file=%d/kuma-push-url`; the node then pushes its status every
        `kumaIntervalSecs` seconds.
      '';
    };

    kumaAllowPlainHttp = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Allow a plain `http://` push URL to a non-loopback address (`--kuma-allow-plain-http`).
        Only for a path that is encrypted already, such as the WireGuard mesh to the Kuma hub;
        otherwise the binary accepts only `https://` (or http to a loopback IP).
      '';
    };

    kumaIntervalSecs = mkOption {
      type = types.nullOr (types.ints.between 1 3600);
      default = null;
      description = "Seconds between Kuma pushes (`--kuma-interval-secs`); null: the binary's 30.";
    };

    kumaDiskDownPct = mkOption {
      type = types.nullOr (types.ints.between 50 100);
      default = null;
      description = "Disk usage (percent of the data directory's filesystem) above which the Kuma push reports down (`--kuma-disk-down-pct`); null: the binary's 90.";
    };

    auditSync = mkOption {
      type = types.nullOr (
        types.enum [
          "normal"
          "full"
        ]
      );
      default = null;
      description = ''
        Audit durability (`--audit-sync`): `normal` (the binary's default) keeps a committed audit
        row through the process dying, even by SIGKILL, with no fsync per batch; `full` also
        through a power cut, at the cost of an fsync per batch of reads.
      '';
    };

    telemetry = {
      host = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://hq.clavitor.com";
        description = "HQ base URL for node telemetry (`--telemetry-host`, POST /v1/telemetry).";
      };
      tokenFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          File holding the HQ bearer token, loaded with LoadCredential= as `telemetry-token` and
          passed as `--telemetry-token-file=%d/telemetry-token`.
        '';
      };
      freq = mkOption {
        type = types.nullOr (types.ints.between 10 86400);
        default = null;
        description = "Seconds between HQ reports (`--telemetry-freq`); null: the binary's 300.";
      };
      popRegion = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "This node's POP region for HQ dashboards (`--pop-region`).";
      };
    };

    webauthn = {
      rpId = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "tokyo.clavitor.com";
        description = ''
          WebAuthn relying party id (`--rp-id`): the domain the owner's passkeys are bound to.
          null: the binary's default, `localhost`. Changing it later orphans enrolled passkeys.
        '';
      };
      origin = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://tokyo.clavitor.com";
        description = ''
          The exact origin of the owner's pages (`--origin`), consistent with `rpId`.
          null: the binary's default, `http://localhost:8080`.
        '';
      };
      challengeTtlSecs = mkOption {
        type = types.nullOr (types.ints.between 1 300);
        default = null;
        description = "How long an operation-bound WebAuthn challenge stays valid (`--challenge-ttl-secs`); null: the binary's 60.";
      };
    };

    wireguardInterface = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "wg0";
      description = ''
        WireGuard interface whose latest handshake age the telemetry reports
        (`--wg-interface`, kernel backend). Grants the service CAP_NET_ADMIN, which reading a
        kernel WireGuard interface over netlink requires.
      '';
    };

    limits = {
      maxConnections = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 4096;
        description = ''
          Connections the listener holds at once (`--max-connections`); past it new ones are
          closed at once and open ones keep working. `null` keeps the binary's default, sized
          for a 1-vCPU node. Applies to the plain and the TLS listener alike.
        '';
      };
      maxConnectionsPerIp = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Connections one client address may hold at once (`--max-connections-per-ip`); `null` keeps the binary's default.";
      };
      bodyTimeoutSecs = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Seconds a request body may take to arrive before the answer is 408 (`--body-timeout-secs`); `null` keeps 30.";
      };
      bodyMinRate = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        description = "Bytes per second a request body must average after its first 5 s, else 408 (`--body-min-rate`; 0: no floor); `null` keeps 1024.";
      };
    };

    proxy = {
      listen = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "127.0.0.1:8443";
        description = ''
          Address of the credential proxy (`--proxy-listen`): agents send their API calls
          through it (`HTTPS_PROXY`) and it injects the credentials their entries' rules name.
          Off when `null`. Keep it on loopback or the WireGuard mesh: agents authenticate with
          their token as proxy credentials.
        '';
      };
      maxTunnels = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Tunnels open at once (`--proxy-max-tunnels`); `null` keeps the binary's default.";
      };
      maxTunnelsPerIp = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Tunnels one client address may hold (`--proxy-max-tunnels-per-ip`); `null` keeps the binary's default.";
      };
      upstreamCaFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/agenix/internal-ca.pem";
        description = ''
          PEM file of extra root certificates upstreams may chain to (`--proxy-upstream-ca`,
          loaded with LoadCredential=); the web PKI roots always count.
        '';
      };
      rate = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Proxied requests (CONNECTs included) per second per agent, sustained (`--proxy-rate`); null: the binary's 50.";
      };
      burst = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Proxied requests per agent allowed in a burst above `rate` (`--proxy-burst`); null: the binary's 200.";
      };
      idleSecs = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Seconds a tunnel may sit with nothing in flight before it is closed (`--proxy-idle-secs`); null: the binary's 90.";
      };
      lifetimeSecs = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Seconds a tunnel may live at most (`--proxy-lifetime-secs`); null: the binary's 3600.";
      };
      upstreamIdleSecs = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Seconds an unused upstream connection is kept for the next request (`--proxy-upstream-idle-secs`); null: the binary's 30.";
      };
      maxRequestBytes = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        description = "Largest request body forwarded, in bytes (`--proxy-max-request-bytes`); null: the binary's 16 MiB.";
      };
      maxResponseBytes = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Largest upstream response passed back, in bytes (`--proxy-max-response-bytes`); null: the binary's 256 MiB.";
      };
      resolve = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "api.internal.example=10.0.0.7" ];
        description = ''
          `NAME=IP` pairs (`--proxy-resolve`): connect to IP for upstream NAME instead of asking
          DNS. The upstream must still prove over TLS that it is NAME.
        '';
      };
      allowPrivateUpstreams = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Let upstream names that resolve to loopback, private or link-local addresses be
          reached (`--proxy-allow-private-upstreams`). Off, an agent cannot use the proxy to
          reach the node's own network.
        '';
      };
    };

    extensionSessionTtlSecs = mkOption {
      type = types.nullOr (types.ints.between 60 86400);
      default = null;
      description = "Life of a browser-extension session token in seconds (`--extension-session-ttl-secs`); null: the binary's 12 hours.";
    };

    maxOpenVaults = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      example = 256;
      description = "Most vaults open at once (`--max-open-vaults`; null: the binary's default, 256); the least recently used beyond it are closed and reopened by their next request.";
    };

    vaultIdleSecs = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      example = 300;
      description = "A vault nobody used for this long is closed (`--vault-idle-secs`; 0: only `maxOpenVaults` closes vaults; null: the binary's default, 300).";
    };

    commercial = {
      tenantId = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "acme-prod";
        description = ''
          The tenant the vendor minted this node's license for (`--tenant-id`); a license for any
          other tenant is INVALID. Commercial edition only, like every `commercial.*` option.
        '';
      };
      licensePublicKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/etc/clavitor/vendor-license.pub.pem";
        description = ''
          The vendor's Ed25519 public key (PEM) that license signatures are checked against
          (`--license-public-key`), loaded with LoadCredential= as `license-public-key`. Public,
          so it may be a Nix store path. Without it every license is INVALID.
        '';
      };
      licenseRevalidateAfterSecs = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Seconds after start before the installed license is first validated again, then daily (`--license-revalidate-after-secs`; null: the binary's 60).";
      };
      auditRetentionDays = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        example = 365;
        description = "Audit rows older than this many days are deleted (`--audit-retention-days`, capped by the license's `max_audit_retention_days`; null: that cap).";
      };
      vaultRetireGraceSecs = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 604800;
        description = "How long a retired vault's file is kept (`--vault-retire-grace-secs`; null: the binary's default, 7 days).";
      };
      autoscope = {
        llmUrl = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "https://llm.internal.example/v1/chat/completions";
          description = "The OpenAI-compatible chat-completions endpoint that suggests scopes and tiers (`--autoscope-llm-url`; null: autoscope off). It only suggests: the owner confirms with a passkey.";
        };
        llmKeyFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "/run/agenix/clavitor-autoscope-llm-key";
          description = "The endpoint's API key, e.g. an agenix secret (`--autoscope-llm-key-file`), loaded with LoadCredential= as `autoscope-llm-key`. Never in the Nix store.";
        };
        llmModel = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The model name sent to the endpoint (`--autoscope-llm-model`; null: the binary's `gpt-4o-mini`).";
        };
        llmTimeoutSecs = mkOption {
          type = types.nullOr (types.ints.between 1 120);
          default = null;
          description = "How long a suggestion may take (`--autoscope-llm-timeout-secs`, 1 to 120; the rules answer instead after it; null: the binary's 10).";
        };
      };
    };

    replication = {
      enable = mkEnableOption "replication between POPs (commercial edition; see docs/operations.md, Replication)";
      settings = mkOption {
        type = tomlFormat.type;
        default = { };
        example = literalExpression ''
          {
            pop_id = "zurich-01";
            role = "backup";
            sources = [ { id = "calgary-01"; public_key = "MCowBQYDK2VwAyEA..."; } ];
          }
        '';
        description = ''
          The replication file (`--replication-config`, TOML): `pop_id`, `role` ("primary" or
          "backup"), `backups` (primary: id, https url, public_key) or `sources` (backup: id,
          public_key), and the limits. `signing_key_file` is set from `signingKeyFile`. The role
          comes from this file only.
        '';
      };
      signingKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/agenix/clavitor-replication-key";
        description = ''
          This POP's Ed25519 private key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`), e.g. an
          agenix secret; loaded with LoadCredential= as `replication-key`. Never in the Nix store.
        '';
      };
      transportKeyFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/agenix/clavitor-replication-transport-key";
        description = ''
          A backup's HPKE transport secret (64 hex digits, `openssl rand -hex 32`): the vaults' data
          keys travel sealed to it. Loaded with LoadCredential= as `replication-transport-key` and
          named in the file as `transport_key_file`. Never in the Nix store.
        '';
      };
    };

    credentials = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        extra-root = "/run/agenix/some-file";
      };
      description = ''
        Extra files loaded with LoadCredential= (name -> path on the host). Refer to one in
        `extraArgs` as `%d/<name>`.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--http-redirect-listen=off" ];
      description = "Extra arguments appended to `clavitor serve`.";
    };

    healthCheckUrl = mkOption {
      type = types.str;
      default = "http://${probeHost}:${listenPort}/healthz";
      defaultText = literalExpression ''"http://<listen address, wildcard -> loopback>/healthz"'';
      description = "URL that the `clavitor-health` command (used by the deploy app) probes.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion =
          cfg.edition == "commercial" || commercialArgs == [ ];
        message = "services.clavitor.commercial.* needs edition = \"commercial\" (the community binary has none of those flags).";
      }
      {
        assertion = cfg.masterKeyFile == null || !(lib.hasPrefix builtins.storeDir cfg.masterKeyFile);
        message = "services.clavitor.masterKeyFile must not be in the Nix store (world-readable); use an agenix secret.";
      }
      {
        # Public material (the vendor's public key, certificates) alone may come from the store.
        assertion = builtins.all (p: !(lib.hasPrefix builtins.storeDir p)) (
          lib.attrValues (removeAttrs credentials [ "license-public-key" "tls-cert" "acme-ca" ])
        );
        message = "services.clavitor.credentials, kumaPushUrlFile, telemetry.tokenFile, tls.keyFile, proxy.upstreamCaFile and commercial.autoscope.llmKeyFile must not point into the Nix store.";
      }
      {
        assertion = (cfg.tls.certFile == null) == (cfg.tls.keyFile == null);
        message = "services.clavitor.tls.certFile and tls.keyFile go together.";
      }
      {
        assertion = cfg.tls.certFile == null || cfg.acme.domains == [ ];
        message = "services.clavitor: choose ACME (acme.domains) or static files (tls.certFile/keyFile), not both.";
      }
      {
        assertion = cfg.acme.domains != [ ] || (cfg.acme.contact == [ ] && cfg.acme.directory == null && cfg.acme.caFile == null);
        message = "services.clavitor.acme.contact, acme.directory and acme.caFile need acme.domains.";
      }
      {
        assertion =
          cfg.acme.domains != [ ] || cfg.tls.certFile != null
          || (cfg.acme.tlsListen == null && cfg.acme.httpRedirectListen == null);
        message = "services.clavitor.acme.tlsListen and acme.httpRedirectListen need TLS: acme.domains, or tls.certFile with tls.keyFile.";
      }
      {
        assertion = (cfg.telemetry.host == null) == (cfg.telemetry.tokenFile == null);
        message = "services.clavitor.telemetry.host and telemetry.tokenFile go together.";
      }
      {
        assertion = !cfg.replication.enable || (cfg.edition == "commercial" && cfg.replication.signingKeyFile != null);
        message = "services.clavitor.replication needs edition = \"commercial\" and replication.signingKeyFile.";
      }
      {
        assertion = !cfg.replication.enable || builtins.elem (cfg.replication.settings.role or null) [ "primary" "backup" ];
        message = "services.clavitor.replication.settings.role must be \"primary\" or \"backup\".";
      }
    ];

    environment.systemPackages = [
      cfg.package
      healthCheck
    ];

    systemd.services.clavitor = {
      description = "Clavitor credential vault";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];

      serviceConfig = {
        Type = "simple";
        ExecStart = clavitorArgs.toExecStart (lib.getExe' cfg.package "clavitor") ([ "serve" ] ++ args);
        Restart = "always";
        RestartSec = 5;

        # Identity and state
        DynamicUser = true;
        User = "clavitor";
        Group = "clavitor";
        StateDirectory = "clavitor";
        StateDirectoryMode = "0700";
        WorkingDirectory = cfg.dataDir;
        UMask = "0077";
        LoadCredential = lib.mapAttrsToList (name: path: "${name}:${path}") credentials;

        # Binding :80/:443 (ACME) is the only privilege it keeps (plus CAP_NET_ADMIN when it
        # reads a WireGuard interface, see wireguardInterface).
        CapabilityBoundingSet = capabilities;
        AmbientCapabilities = capabilities;
        NoNewPrivileges = true;

        # Sandboxing
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateMounts = true;
        # PrivateUsers would void CAP_NET_BIND_SERVICE in the host network namespace: not set.
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        # ProcSubset=pid is not set: the node telemetry reads /proc/meminfo, /proc/stat, /proc/loadavg.
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
          "AF_NETLINK" # WireGuard status (wireguard-control) talks netlink
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        SystemCallErrorNumber = "EPERM";
        DevicePolicy = "closed";
      };
    };
  };
}
