# services.clavitor options -> `clavitor serve` command line. Pure: no nixpkgs needed, so
# tests/nix/args-test.nix evaluates it offline and checks every flag it emits against the real
# binary's `clavitor serve --help`.
#
# To expose a new flag of the binary: add one line to `flags` (option name -> flag) and the typed
# option of the same name in modules/clavitor.nix. Value kinds:
#   null -> nothing; bool -> the bare flag when true; list -> the flag once per element;
#   anything else -> "--flag=value".
let
  flags = {
    listen = "--listen"; # CLAVITOR_LISTEN
    allowPlainHttp = "--allow-plain-http"; # CLAVITOR_ALLOW_PLAIN_HTTP (bool)
    dataDir = "--data-dir"; # CLAVITOR_DATA_DIR (global flag)
    masterKeyFile = "--master-key-file"; # CLAVITOR_MASTER_KEY_FILE (global flag)
    logFormat = "--log-format"; # CLAVITOR_LOG_FORMAT
    # The node (issue 6): TLS, Kuma push, HQ telemetry, WireGuard.
    acmeDomains = "--acme-domain"; # CLAVITOR_ACME_DOMAIN (list: the flag once per domain)
    acmeContact = "--acme-contact"; # CLAVITOR_ACME_CONTACT (list)
    acmeDirectory = "--acme-directory"; # CLAVITOR_ACME_DIRECTORY
    acmeCaFile = "--acme-ca-file"; # CLAVITOR_ACME_CA_FILE
    tlsCert = "--tls-cert"; # CLAVITOR_TLS_CERT (static TLS instead of ACME)
    tlsKey = "--tls-key"; # CLAVITOR_TLS_KEY
    tlsListen = "--tls-listen"; # CLAVITOR_TLS_LISTEN
    httpRedirectListen = "--http-redirect-listen"; # CLAVITOR_HTTP_REDIRECT_LISTEN
    kumaPushUrlFile = "--kuma-push-url-file"; # CLAVITOR_KUMA_PUSH_URL_FILE
    kumaIntervalSecs = "--kuma-interval-secs"; # CLAVITOR_KUMA_INTERVAL_SECS
    kumaAllowPlainHttp = "--kuma-allow-plain-http"; # CLAVITOR_KUMA_ALLOW_PLAIN_HTTP (bool)
    telemetryHost = "--telemetry-host"; # CLAVITOR_TELEMETRY_HOST
    telemetryTokenFile = "--telemetry-token-file"; # CLAVITOR_TELEMETRY_TOKEN_FILE
    telemetryFreq = "--telemetry-freq"; # CLAVITOR_TELEMETRY_FREQ
    popRegion = "--pop-region"; # CLAVITOR_POP_REGION
    wireguardInterface = "--wg-interface"; # CLAVITOR_WG_INTERFACE
    # WebAuthn (issue 4): the relying party the owner's passkeys are bound to.
    rpId = "--rp-id"; # CLAVITOR_RP_ID
    origin = "--origin"; # CLAVITOR_ORIGIN
    # The hardened listener (issue 12): caps on strangers.
    maxConnections = "--max-connections"; # CLAVITOR_MAX_CONNECTIONS
    maxConnectionsPerIp = "--max-connections-per-ip"; # CLAVITOR_MAX_CONNECTIONS_PER_IP
    bodyTimeoutSecs = "--body-timeout-secs"; # CLAVITOR_BODY_TIMEOUT_SECS
    bodyMinRate = "--body-min-rate"; # CLAVITOR_BODY_MIN_RATE
    kumaDiskDownPct = "--kuma-disk-down-pct"; # CLAVITOR_KUMA_DISK_DOWN_PCT
    auditSync = "--audit-sync"; # CLAVITOR_AUDIT_SYNC (normal | full)
    challengeTtlSecs = "--challenge-ttl-secs"; # CLAVITOR_CHALLENGE_TTL_SECS
    # The credential proxy (issue 18), off unless proxyListen is set.
    proxyListen = "--proxy-listen"; # CLAVITOR_PROXY_LISTEN
    proxyMaxTunnels = "--proxy-max-tunnels"; # CLAVITOR_PROXY_MAX_TUNNELS
    proxyMaxTunnelsPerIp = "--proxy-max-tunnels-per-ip"; # CLAVITOR_PROXY_MAX_TUNNELS_PER_IP
    proxyUpstreamCa = "--proxy-upstream-ca"; # CLAVITOR_PROXY_UPSTREAM_CA
    proxyAllowPrivateUpstreams = "--proxy-allow-private-upstreams"; # CLAVITOR_PROXY_ALLOW_PRIVATE_UPSTREAMS (bool)
    proxyRate = "--proxy-rate"; # CLAVITOR_PROXY_RATE
    proxyBurst = "--proxy-burst"; # CLAVITOR_PROXY_BURST
    proxyIdleSecs = "--proxy-idle-secs"; # CLAVITOR_PROXY_IDLE_SECS
    proxyLifetimeSecs = "--proxy-lifetime-secs"; # CLAVITOR_PROXY_LIFETIME_SECS
    proxyUpstreamIdleSecs = "--proxy-upstream-idle-secs"; # CLAVITOR_PROXY_UPSTREAM_IDLE_SECS
    proxyMaxRequestBytes = "--proxy-max-request-bytes"; # CLAVITOR_PROXY_MAX_REQUEST_BYTES
    proxyMaxResponseBytes = "--proxy-max-response-bytes"; # CLAVITOR_PROXY_MAX_RESPONSE_BYTES
    proxyResolve = "--proxy-resolve"; # CLAVITOR_PROXY_RESOLVE (list: the flag once per NAME=IP)
    # The browser extension's sessions.
    extensionSessionTtlSecs = "--extension-session-ttl-secs"; # CLAVITOR_EXTENSION_SESSION_TTL_SECS
    # Open vaults: how many at once, and when an idle one is closed.
    maxOpenVaults = "--max-open-vaults"; # CLAVITOR_MAX_OPEN_VAULTS
    vaultIdleSecs = "--vault-idle-secs"; # CLAVITOR_VAULT_IDLE_SECS
  };

  # Flags only the commercial binary has (services.clavitor.commercial.*): emitted only for
  # edition = "commercial"; tests/nix/args-test.nix checks they are in the commercial binary's
  # help and in none of the community binary's.
  commercialFlags = {
    tenantId = "--tenant-id"; # CLAVITOR_TENANT_ID
    licensePublicKey = "--license-public-key"; # CLAVITOR_LICENSE_PUBLIC_KEY (a file)
    licenseRevalidateAfterSecs = "--license-revalidate-after-secs"; # CLAVITOR_LICENSE_REVALIDATE_AFTER_SECS
    auditRetentionDays = "--audit-retention-days"; # CLAVITOR_AUDIT_RETENTION_DAYS
    vaultRetireGraceSecs = "--vault-retire-grace-secs"; # CLAVITOR_VAULT_RETIRE_GRACE_SECS
    autoscopeLlmUrl = "--autoscope-llm-url"; # CLAVITOR_AUTOSCOPE_LLM_URL
    autoscopeLlmKeyFile = "--autoscope-llm-key-file"; # CLAVITOR_AUTOSCOPE_LLM_KEY_FILE
    autoscopeLlmModel = "--autoscope-llm-model"; # CLAVITOR_AUTOSCOPE_LLM_MODEL
    autoscopeLlmTimeoutSecs = "--autoscope-llm-timeout-secs"; # CLAVITOR_AUTOSCOPE_LLM_TIMEOUT_SECS
  };

  render =
    flag: value:
    if value == null then
      [ ]
    else if builtins.isBool value then
      (if value then [ flag ] else [ ])
    else if builtins.isList value then
      builtins.concatMap (render flag) value
    else
      [ "${flag}=${toString value}" ];

  # opts: an attrset whose names are keys of `table`, plus optional `extraArgs` (list of strings).
  argsOf =
    table: opts:
    let
      unknown = builtins.filter (n: !(table ? ${n}) && n != "extraArgs") (builtins.attrNames opts);
    in
    if unknown != [ ] then
      throw "clavitor-args: no flag mapping for option(s): ${builtins.concatStringsSep ", " unknown}"
    else
      builtins.concatMap (n: if opts ? ${n} then render table.${n} opts.${n} else [ ]) (
        builtins.attrNames table
      )
      ++ (opts.extraArgs or [ ]);
  toArgs = argsOf flags;
  toCommercialArgs = argsOf commercialFlags;

  # Quote one argument for a systemd Exec*= line (like nixpkgs' utils.escapeSystemdExecArg), except
  # that "%d/" is kept: it is systemd's credentials directory, so "--master-key-file=%d/master-key"
  # names a file loaded with LoadCredential=.
  escapeExecArg =
    arg: builtins.replaceStrings [ "%d/" "%" "$" ] [ "%d/" "%%" "$$" ] (builtins.toJSON (toString arg));

  toExecStart =
    program: args: builtins.concatStringsSep " " ([ (escapeExecArg program) ] ++ map escapeExecArg args);
in
{
  inherit
    flags
    commercialFlags
    render
    toArgs
    toCommercialArgs
    escapeExecArg
    toExecStart
    ;
}
