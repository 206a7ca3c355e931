# Offline cross-check of secrets/secrets.nix (agenix recipients) against the inventory.
let
  inv = import ../../hosts/inventory.nix;
  secrets = import ../../secrets/secrets.nix;
  rules = import ../../secrets/rules.nix;
  check = name: ok: msg: { inherit name ok msg; };
  all = builtins.all;
  kinds = [ "wg" "master-key" "kuma-push" ];
  admins = map (a: a.sshKey) inv.admins;
  hostKeys = map (h: h.hostKey) inv.hosts;
  missingFor = h: builtins.filter (k: !(secrets ? "${k}-${h.name}.age")) kinds;
  hostsMissing = builtins.filter (h: missingFor h != [ ]) inv.hosts;
  entries = builtins.attrNames secrets;
  ownerOf = f: builtins.head (builtins.filter (h: builtins.match ".*-${h.name}\\.age" f != null) inv.hosts);
in
[
  (check "secrets: secrets.nix is exactly rules.nix applied to the inventory" (secrets == rules inv) "")
  (check "secrets: every host has its wg, master-key and kuma-push secrets" (hostsMissing == [ ])
    (builtins.concatStringsSep ", " (map (h: h.name) hostsMissing)))
  (check "secrets: 3 secrets per host, nothing else" (builtins.length entries == 3 * builtins.length inv.hosts) "")
  (check "secrets: each host's secrets name that host's key as a recipient"
    (all (h: all (k: builtins.elem h.hostKey secrets."${k}-${h.name}.age".publicKeys) kinds) inv.hosts) "")
  (check "secrets: no secret is readable by another host"
    (all (f: let o = ownerOf f; in
      builtins.filter (k: builtins.elem k hostKeys && k != o.hostKey) secrets.${f}.publicKeys == [ ]) entries) "")
  (check "secrets: the SOC admins are recipients of every secret"
    (all (f: all (a: builtins.elem a secrets.${f}.publicKeys) admins) entries) "")
  (check "secrets: the modules read the same file names (wg-, master-key-, kuma-push-<name>.age)"
    (let
      node = builtins.readFile ../../modules/node.nix;
      wg = builtins.readFile ../../modules/wireguard-mesh.nix;
    in builtins.match ".*\"master-key\".*\"kuma-push\".*" node != null
      && builtins.match ".*/wg-\\$\\{fleet.name}\\.age.*" wg != null) "")
]
