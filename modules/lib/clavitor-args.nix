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
    # Arrive with later features (see docs/operations.md, "Module options and binary flags"):
    #   acmeDomains = "--acme-domain"; acmeContact = "--acme-contact";
    #   acmeDirectory = "--acme-directory"; rpId = "--rp-id"; origin = "--origin";
    #   kumaPushUrlFile = "--kuma-push-url-file"; ...
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

  # opts: an attrset whose names are keys of `flags`, plus optional `extraArgs` (list of strings).
  toArgs =
    opts:
    let
      unknown = builtins.filter (n: !(flags ? ${n}) && n != "extraArgs") (builtins.attrNames opts);
    in
    if unknown != [ ] then
      throw "clavitor-args: no flag mapping for option(s): ${builtins.concatStringsSep ", " unknown}"
    else
      builtins.concatMap (n: if opts ? ${n} then render flags.${n} opts.${n} else [ ]) (
        builtins.attrNames flags
      )
      ++ (opts.extraArgs or [ ]);

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
    render
    toArgs
    escapeExecArg
    toExecStart
    ;
}
