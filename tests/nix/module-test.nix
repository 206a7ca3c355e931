# Offline evaluation of modules/clavitor.nix. nixpkgs' module system cannot be fetched here, so the
# module is applied to a small stand-in of `lib`: options keep their declarations, every
# configuration below is merged over the options' defaults, each value set is checked against
# its declared type (the subset of types the module uses), and the result is read back: the
# service's ExecStart, LoadCredential and the assertions that fail. What this proves: the option
# tree, how options become flags and credentials, and the assertions. What it cannot prove: the
# NixOS module system's own merging (the VM tests do that where nix has network access).
let
  check = name: ok: msg: { inherit name ok msg; };
  args = import ../../modules/lib/clavitor-args.nix;

  isOpt = x: builtins.isAttrs x && x ? _opt;
  types = rec {
    str = { name = "str"; ok = builtins.isString; };
    bool = { name = "bool"; ok = builtins.isBool; };
    package = { name = "package"; ok = x: builtins.isAttrs x || builtins.isString x; };
    nullOr = t: { name = "null or ${t.name}"; ok = x: x == null || t.ok x; };
    listOf = t: { name = "list of ${t.name}"; ok = x: builtins.isList x && builtins.all t.ok x; };
    attrsOf = t: { name = "attrs of ${t.name}"; ok = x: builtins.isAttrs x && builtins.all t.ok (builtins.attrValues x); };
    enum = vs: { name = "one of ${builtins.toJSON vs}"; ok = x: builtins.elem x vs; };
    ints = {
      positive = { name = "positive int"; ok = x: builtins.isInt x && x > 0; };
      unsigned = { name = "unsigned int"; ok = x: builtins.isInt x && x >= 0; };
      between = lo: hi: { name = "int in ${toString lo}..${toString hi}"; ok = x: builtins.isInt x && x >= lo && x <= hi; };
    };
  };
  splitOn = sep: s: builtins.filter builtins.isString (builtins.split sep s);
  lib = {
    inherit types;
    mkOption = o: o // { _opt = true; };
    mkEnableOption = d: { _opt = true; type = types.bool; default = false; description = d; };
    mkIf = condition: content: { _if = condition; inherit content; };
    literalExpression = e: { _literal = e; };
    optionalAttrs = c: a: if c then a else { };
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: l: if c then l else [ ];
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    attrValues = builtins.attrValues;
    head = builtins.head;
    last = l: builtins.elemAt l (builtins.length l - 1);
    splitString = sep: splitOn (builtins.replaceStrings [ "." ] [ "\\." ] sep);
    escapeShellArg = s: "'${s}'";
    getExe' = pkg: exe: "${pkg}/bin/${exe}";
    mapAttrsToList = f: a: map (n: f n a.${n}) (builtins.attrNames a);
  };
  pkgs = {
    formats.toml = _: { type = { name = "toml"; ok = builtins.isAttrs; }; generate = name: _: "/nix/store/stub-${name}"; };
    writeShellScriptBin = name: _: "/nix/store/stub-${name}";
    curl = "/nix/store/stub-curl";
  };

  # The options' defaults, with `user` merged over them (attrsets deeply, anything else replaced).
  merge = opts: user:
    builtins.mapAttrs (n: o:
      if isOpt o then (if user ? ${n} then user.${n} else o.default or null)
      else merge o (user.${n} or { })) opts;
  # Values set in `user` that their option's type refuses, or that name no option.
  badValues = prefix: opts: user: builtins.concatMap (n:
    let path = "${prefix}.${n}"; in
    if !(opts ? ${n}) then [ "${path}: no such option" ]
    else if isOpt opts.${n} then (if opts.${n}.type.ok user.${n} then [ ] else [ "${path}: not a ${opts.${n}.type.name}" ])
    else badValues path opts.${n} user.${n}) (builtins.attrNames user);

  # Evaluates the module with `user` as services.clavitor.
  eval = user:
    let
      m = import ../../modules/clavitor.nix { inherit lib pkgs config; };
      config.services.clavitor = merge m.options.services.clavitor (
        { editionPackages = { community = "/nix/store/stub-community"; commercial = "/nix/store/stub-commercial"; }; } // user
      );
      svc = m.config.content.systemd.services.clavitor.serviceConfig;
    in {
      bad = badValues "services.clavitor" m.options.services.clavitor user;
      execStart = svc.ExecStart;
      credentials = svc.LoadCredential;
      failed = map (a: a.message) (builtins.filter (a: !a.assertion) m.config.content.assertions);
    };
  has = s: needle: builtins.match ".*${needle}.*" s != null;

  commercial = eval {
    enable = true;
    edition = "commercial";
    maxOpenVaults = 512;
    vaultIdleSecs = 0;
    auditSync = "full";
    limits.bodyMinRate = 0;
    webauthn.challengeTtlSecs = 120;
    commercial = {
      tenantId = "acme-prod";
      licensePublicKeyFile = "/nix/store/vendor-license.pub.pem";
      auditRetentionDays = 365;
      autoscope = { llmUrl = "https://llm.internal.example/v1/chat/completions"; llmKeyFile = "/run/agenix/llm-key"; };
    };
  };
  community = eval { enable = true; commercial.tenantId = "acme-prod"; };
  plain = eval { enable = true; };
  storeSecret = eval { enable = true; edition = "commercial"; commercial.autoscope.llmKeyFile = "/nix/store/llm-key"; };
  # Static TLS from files some other service renews, a tuned proxy, shorter extension sessions.
  staticTls = eval {
    enable = true;
    tls = { certFile = "/nix/store/fullchain.pem"; keyFile = "/var/lib/acme/tokyo/key.pem"; };
    acme.tlsListen = "0.0.0.0:8443";
    extensionSessionTtlSecs = 3600;
    proxy = {
      listen = "127.0.0.1:8444";
      rate = 20;
      burst = 40;
      idleSecs = 60;
      lifetimeSecs = 600;
      upstreamIdleSecs = 15;
      maxRequestBytes = 0;
      maxResponseBytes = 8388608;
      resolve = [ "api.internal.example=10.0.0.7" "billing.internal.example=10.0.0.8" ];
    };
  };
  privateAcme = eval {
    enable = true;
    acme = { domains = [ "tokyo.clavitor.com" ]; directory = "https://ca.internal.example/acme/directory"; caFile = "/nix/store/internal-ca.pem"; };
  };
  refusedBy = user: needle: builtins.any (m: has m needle) (eval user).failed;
in
[
  (check "module: the configurations below use only declared options, with values of their types"
    (commercial.bad ++ community.bad ++ plain.bad == [ ]) (builtins.toJSON (commercial.bad ++ community.bad ++ plain.bad)))
  (check "module: a refused value is caught (the type check can fail)"
    ((eval { enable = true; maxOpenVaults = 0; }).bad != [ ] && (eval { enable = true; auditSync = "sometimes"; }).bad != [ ]
      && (eval { enable = true; edition = "commercial"; commercial.autoscope.llmTimeoutSecs = 121; }).bad != [ ]) "")
  (check "module: commercial options become the commercial binary's flags, files by credential"
    (builtins.all (has commercial.execStart) [
      "\"--tenant-id=acme-prod\"" "\"--license-public-key=%d/license-public-key\"" "\"--max-open-vaults=512\""
      "\"--vault-idle-secs=0\"" "\"--audit-retention-days=365\"" "\"--audit-sync=full\"" "\"--body-min-rate=0\"" "\"--challenge-ttl-secs=120\"" "\"--autoscope-llm-url=https://llm.internal.example/v1/chat/completions\""
      "\"--autoscope-llm-key-file=%d/autoscope-llm-key\""
    ] && builtins.match ".*stub-commercial/bin/clavitor\" \"serve\".*" commercial.execStart != null)
    commercial.execStart)
  (check "module: unset commercial options emit no flag"
    (!(has commercial.execStart "--autoscope-llm-model") && !(has commercial.execStart "--vault-retire-grace-secs"))
    commercial.execStart)
  (check "module: the key files are loaded with LoadCredential="
    (builtins.sort builtins.lessThan commercial.credentials == [
      "autoscope-llm-key:/run/agenix/llm-key" "license-public-key:/nix/store/vendor-license.pub.pem"
    ]) (builtins.toJSON commercial.credentials))
  (check "module: a commercial configuration passes every assertion (the vendor's public key may be a store path)"
    (commercial.failed == [ ]) (builtins.toJSON commercial.failed))
  (check "module: commercial options on the community edition are refused, and emit no flag"
    (builtins.any (m: has m "needs edition") community.failed && !(has community.execStart "--tenant-id"))
    (builtins.toJSON community.failed))
  (check "module: a secret in the Nix store is refused"
    (builtins.any (m: has m "must not point into the Nix store") storeSecret.failed) (builtins.toJSON storeSecret.failed))
  (check "module: static TLS files are loaded with LoadCredential= and passed as %d/ paths (the certificate may be a store path)"
    (builtins.all (has staticTls.execStart) [ "\"--tls-cert=%d/tls-cert\"" "\"--tls-key=%d/tls-key\"" "\"--tls-listen=0.0.0.0:8443\"" ]
      && builtins.sort builtins.lessThan staticTls.credentials == [ "tls-cert:/nix/store/fullchain.pem" "tls-key:/var/lib/acme/tokyo/key.pem" ]
      && staticTls.failed == [ ] && staticTls.bad == [ ])
    (builtins.toJSON staticTls))
  (check "module: proxy tuning and the extension session life become flags, one --proxy-resolve per pair"
    (builtins.all (has staticTls.execStart) [
      "\"--proxy-rate=20\"" "\"--proxy-burst=40\"" "\"--proxy-idle-secs=60\"" "\"--proxy-lifetime-secs=600\""
      "\"--proxy-upstream-idle-secs=15\"" "\"--proxy-max-request-bytes=0\"" "\"--proxy-max-response-bytes=8388608\""
      "\"--proxy-resolve=api.internal.example=10.0.0.7\" \"--proxy-resolve=billing.internal.example=10.0.0.8\""
      "\"--extension-session-ttl-secs=3600\""
    ]) staticTls.execStart)
  (check "module: a private ACME CA is passed as a credential"
    (has privateAcme.execStart "\"--acme-ca-file=%d/acme-ca\"" && privateAcme.credentials == [ "acme-ca:/nix/store/internal-ca.pem" ]
      && privateAcme.failed == [ ]) (builtins.toJSON privateAcme))
  (check "module: TLS settings the binary would refuse at start are refused at evaluation"
    (refusedBy { enable = true; tls.certFile = "/etc/c.pem"; } "go together"
      && refusedBy { enable = true; tls.keyFile = "/etc/k.pem"; } "go together"
      && refusedBy { enable = true; acme.domains = [ "a.example.com" ]; tls = { certFile = "/etc/c.pem"; keyFile = "/etc/k.pem"; }; } "not both"
      && refusedBy { enable = true; acme.caFile = "/etc/ca.pem"; } "need acme.domains"
      && refusedBy { enable = true; acme.tlsListen = "0.0.0.0:443"; } "need TLS"
      && refusedBy { enable = true; tls = { certFile = "/etc/c.pem"; keyFile = "/nix/store/k.pem"; }; } "must not point into the Nix store")
    "")
  (check "module: out-of-range values of the new options are refused by their types"
    ((eval { enable = true; extensionSessionTtlSecs = 59; }).bad != [ ] && (eval { enable = true; proxy.rate = 0; }).bad != [ ]
      && (eval { enable = true; proxy.resolve = "a=1.2.3.4"; }).bad != [ ]) "")
  (check "module: the defaults run `clavitor serve` on loopback with no commercial flag and no credential"
    (has plain.execStart "\"--listen=127.0.0.1:8080\"" && plain.credentials == [ ] && plain.failed == [ ]
      && builtins.all (f: !(has plain.execStart f)) (builtins.attrValues args.commercialFlags))
    plain.execStart)
]
