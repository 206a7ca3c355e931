# Offline checks of modules/lib/clavitor-args.nix against the real binary's `clavitor serve --help`.
# helpJson: JSON list of the flags (e.g. "--listen") found in that help text (tests/nix/run.sh).
{ helpJson }:
let
  helpFlags = builtins.fromJSON helpJson;
  a = import ../../modules/lib/clavitor-args.nix;
  check = name: ok: msg: { inherit name ok msg; };
  flagOf = arg: builtins.head (builtins.match "(--[a-z0-9-]+).*" arg);

  # Every option the mapping knows, set (the module's full option set).
  full = builtins.mapAttrs (n: _: {
    listen = "127.0.0.1:8080";
    allowPlainHttp = true;
    dataDir = "/var/lib/clavitor";
    masterKeyFile = "%d/master-key";
    logFormat = "json";
    acmeDomains = [ "tokyo.clavitor.com" ];
    acmeContact = [ "soc@clavitor.com" ];
    acmeDirectory = "production";
    tlsListen = "0.0.0.0:443";
    httpRedirectListen = "0.0.0.0:80";
    kumaPushUrlFile = "%d/kuma-push-url";
    kumaIntervalSecs = 30;
    kumaAllowPlainHttp = true;
    telemetryHost = "https://hq.clavitor.com";
    telemetryTokenFile = "%d/telemetry-token";
    telemetryFreq = 300;
    popRegion = "ap-northeast";
    wireguardInterface = "wg0";
    rpId = "tokyo.clavitor.com";
    origin = "https://tokyo.clavitor.com";
    maxConnections = 4096;
    maxConnectionsPerIp = 64;
    bodyTimeoutSecs = 20;
    proxyListen = "127.0.0.1:8443";
    proxyMaxTunnels = 2000;
    proxyMaxTunnelsPerIp = 100;
    proxyUpstreamCa = "%d/proxy-upstream-ca";
    proxyAllowPrivateUpstreams = true;
    maxOpenVaults = 256;
    vaultIdleSecs = 300;
    bodyMinRate = 512;
    kumaDiskDownPct = 85;
    auditSync = "full";
    challengeTtlSecs = 120;
    acmeCaFile = "%d/acme-ca";
    tlsCert = "%d/tls-cert";
    tlsKey = "%d/tls-key";
    proxyRate = 20;
    proxyBurst = 40;
    proxyIdleSecs = 60;
    proxyLifetimeSecs = 600;
    proxyUpstreamIdleSecs = 15;
    proxyMaxRequestBytes = 1048576;
    proxyMaxResponseBytes = 8388608;
    proxyResolve = [ "api.internal.example=10.0.0.7" ];
    extensionSessionTtlSecs = 3600;
  }.${n} or "x") a.flags;
  args = a.toArgs full;
  emitted = map flagOf args;
  missing = builtins.filter (f: !(builtins.elem f helpFlags)) emitted;

  # `serve` flags with no option, each for a reason; any other flag of the binary must have one.
  leftToExtraArgs = [
    "--help"
    "--version"
    "--kuma-push-url" # the URL holds a secret: the module passes it as a file (kumaPushUrlFile)
    "--wg-userspace" # wireguard-go's UAPI socket is root's (0700): the dynamic user cannot open it
    "--replication-config" # commercial: the module writes the file from replication.settings
  ];
  known = builtins.attrValues a.flags ++ builtins.attrValues a.commercialFlags ++ leftToExtraArgs;
  unmapped = builtins.filter (f: !(builtins.elem f known)) helpFlags;

  # The commercial table: in the commercial binary's help, in none of the community binary's.
  commercialHelp = builtins.elem "--tenant-id" helpFlags;
  commercialArgs = a.toCommercialArgs (builtins.mapAttrs (n: _: 1) a.commercialFlags);
  commercialEmitted = map flagOf commercialArgs;
  commercialWrong = builtins.filter (f: builtins.elem f helpFlags != commercialHelp) commercialEmitted;
in
[
  (check "args: the help text lists flags" (builtins.length helpFlags > 0) "no --flags in serve --help")
  (check "args: the full option set emits one flag per mapped option"
    (builtins.length args == builtins.length (builtins.attrNames a.flags)) (builtins.toJSON args))
  (check "args: every emitted flag exists in `clavitor serve --help`" (missing == [ ])
    "not in --help: ${builtins.concatStringsSep " " missing}")
  (check "args: exact rendering of the full set"
    (args == [
      "--acme-ca-file=%d/acme-ca" "--acme-contact=soc@clavitor.com" "--acme-directory=production" "--acme-domain=tokyo.clavitor.com"
      "--allow-plain-http" "--audit-sync=full" "--body-min-rate=512" "--body-timeout-secs=20" "--challenge-ttl-secs=120" "--data-dir=/var/lib/clavitor"
      "--extension-session-ttl-secs=3600" "--http-redirect-listen=0.0.0.0:80"
      "--kuma-allow-plain-http" "--kuma-disk-down-pct=85" "--kuma-interval-secs=30" "--kuma-push-url-file=%d/kuma-push-url" "--listen=127.0.0.1:8080"
      "--log-format=json" "--master-key-file=%d/master-key"
      "--max-connections=4096" "--max-connections-per-ip=64" "--max-open-vaults=256" "--origin=https://tokyo.clavitor.com"
      "--pop-region=ap-northeast"
      "--proxy-allow-private-upstreams" "--proxy-burst=40" "--proxy-idle-secs=60" "--proxy-lifetime-secs=600" "--proxy-listen=127.0.0.1:8443"
      "--proxy-max-request-bytes=1048576" "--proxy-max-response-bytes=8388608" "--proxy-max-tunnels=2000"
      "--proxy-max-tunnels-per-ip=100" "--proxy-rate=20" "--proxy-resolve=api.internal.example=10.0.0.7" "--proxy-upstream-ca=%d/proxy-upstream-ca"
      "--proxy-upstream-idle-secs=15" "--rp-id=tokyo.clavitor.com"
      "--telemetry-freq=300" "--telemetry-host=https://hq.clavitor.com" "--telemetry-token-file=%d/telemetry-token"
      "--tls-cert=%d/tls-cert" "--tls-key=%d/tls-key" "--tls-listen=0.0.0.0:443" "--vault-idle-secs=300" "--wg-interface=wg0"
    ])
    (builtins.toJSON args))
  (check "args: every flag of `clavitor serve --help` has a module option (or a reason not to)" (unmapped == [ ])
    "no option for: ${builtins.concatStringsSep " " unmapped} (add it to modules/lib/clavitor-args.nix and modules/clavitor.nix)")
  (check "args: the commercial table emits one flag per option, none shared with the common table"
    (builtins.length commercialArgs == builtins.length (builtins.attrNames a.commercialFlags)
      && builtins.all (f: !(builtins.elem f (builtins.attrValues a.flags))) commercialEmitted)
    (builtins.toJSON commercialArgs))
  (check (if commercialHelp then "args: every commercial flag exists in the commercial binary's `serve --help`"
          else "args: no commercial flag exists in the community binary's `serve --help`")
    (commercialWrong == [ ]) "wrong: ${builtins.concatStringsSep " " commercialWrong}")
  (check "args: null options emit nothing, extraArgs go last"
    (a.toArgs { listen = "127.0.0.1:8080"; masterKeyFile = null; extraArgs = [ "--x" ]; } == [ "--listen=127.0.0.1:8080" "--x" ]) "")
  (check "args: bools render as a bare flag (or nothing), lists repeat the flag, ints as text"
    (a.render "--f" true == [ "--f" ] && a.render "--f" false == [ ]
      && a.toArgs { listen = [ "a" "b" ]; } == [ "--listen=a" "--listen=b" ]
      && a.render "--n" 5 == [ "--n=5" ]) "")
  (check "args: an option without a flag mapping is refused"
    (!(builtins.tryEval (builtins.deepSeq (a.toArgs { acmeDomain = "x"; }) null)).success) "")
  (check "args: systemd escaping keeps %d/ and escapes % and $"
    (a.toExecStart "/bin/clavitor" [ "--master-key-file=%d/master-key" "50%" "$HOME" ]
      == "\"/bin/clavitor\" \"--master-key-file=%d/master-key\" \"50%%\" \"$$HOME\"") "")
]
