# Offline checks of hosts/inventory.nix (pure; nix-instantiate --eval --strict --json).
# Evaluates to a list of { name; ok; msg; } that tests/nix/run.sh counts.
let
  inv = import ../../hosts/inventory.nix;
  hosts = inv.hosts;
  names = map (h: h.name) hosts;
  check = name: ok: msg: { inherit name ok msg; };
  sort = builtins.sort builtins.lessThan;
  uniq = l: builtins.attrNames (builtins.listToAttrs (map (x: { name = x; value = null; }) l));
  all = builtins.all;
  bad = pred: builtins.filter (h: !(pred h)) hosts;
  badNames = pred: builtins.concatStringsSep ", " (map (h: h.name) (bad pred));

  # infrastructure.md: 3 Hostkey + 13 Vultr cities
  expectedCities = [
    "Amsterdam" "Zurich" "Dubai"
    "New Jersey" "Silicon Valley" "Dallas" "London" "Frankfurt" "Warsaw" "Tokyo" "Seoul"
    "Mumbai" "São Paulo" "Sydney" "Johannesburg" "Tel Aviv"
  ];
  hostkeyCities = [ "Amsterdam" "Zurich" "Dubai" ];

  octets = a: builtins.match "([0-9]+)\\.([0-9]+)\\.([0-9]+)\\.([0-9]+)" a;
  inSubnet =
    a:
    let
      o = octets a;
      last = if o == null then 0 else builtins.fromJSON (builtins.elemAt o 3);
    in
    o != null && builtins.elemAt o 0 == "10" && builtins.elemAt o 1 == "84" && builtins.elemAt o 2 == "0"
    && last >= 1 && last <= 254;
  wgKeyOk = k: builtins.match "[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=" k != null;
  hostKeyOk = k: builtins.match "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43}( [^ ]+)?" k != null;
  nameOk = n: builtins.match "[a-z][a-z0-9]*" n != null;
  hubs = builtins.filter (h: h.role == "hub") hosts;
  addrs = map (h: h.wgAddress) hosts;
  hostDirs = builtins.attrNames (
    builtins.removeAttrs (builtins.readDir ../../hosts) [ "inventory.nix" "common" ]
  );
  required = [ "name" "provider" "city" "region" "role" "system" "edition" "fqdn" "wgAddress" "wgPublicKey" "hostKey" "placeholderKeys" ];
in
[
  (check "inventory: 16 hosts" (builtins.length hosts == 16) "found ${toString (builtins.length hosts)}")
  (check "inventory: every host has all fields (${builtins.concatStringsSep " " required})"
    (all (h: all (f: h ? ${f}) required) hosts) (badNames (h: all (f: h ? ${f}) required)))
  (check "inventory: cities are those of infrastructure.md" (sort (map (h: h.city) hosts) == sort expectedCities)
    "got: ${builtins.concatStringsSep ", " (sort (map (h: h.city) hosts))}")
  (check "inventory: Amsterdam, Zurich, Dubai on Hostkey, the 13 others on Vultr"
    (all (h: h.provider == (if builtins.elem h.city hostkeyCities then "hostkey" else "vultr")) hosts)
    (badNames (h: h.provider == (if builtins.elem h.city hostkeyCities then "hostkey" else "vultr"))))
  (check "inventory: names unique" (builtins.length (uniq names) == builtins.length names) "")
  (check "inventory: names are lowercase hostnames" (all (h: nameOk h.name) hosts) (badNames (h: nameOk h.name)))
  (check "inventory: WireGuard addresses unique" (builtins.length (uniq addrs) == builtins.length addrs) "")
  (check "inventory: WireGuard addresses inside 10.84.0.0/24 (.1-.254)" (all (h: inSubnet h.wgAddress) hosts)
    (badNames (h: inSubnet h.wgAddress)))
  (check "inventory: subnet is 10.84.0.0/24, port 51820, keepalive 25"
    (inv.wireguard.subnet == "10.84.0.0/24" && inv.wireguard.prefixLength == 24
      && inv.wireguard.port == 51820 && inv.wireguard.persistentKeepalive == 25) "")
  (check "inventory: exactly one hub" (builtins.length hubs == 1) "found ${toString (builtins.length hubs)}")
  (check "inventory: the hub is zurich at 10.84.0.1"
    (builtins.length hubs == 1 && (builtins.head hubs).name == "zurich" && (builtins.head hubs).wgAddress == "10.84.0.1") "")
  (check "inventory: every other host is a spoke" (all (h: h.role == "hub" || h.role == "spoke") hosts)
    (badNames (h: h.role == "hub" || h.role == "spoke")))
  (check "inventory: WireGuard public keys are 44-char base64 ending '='" (all (h: wgKeyOk h.wgPublicKey) hosts)
    (badNames (h: wgKeyOk h.wgPublicKey)))
  (check "inventory: WireGuard public keys unique"
    (builtins.length (uniq (map (h: h.wgPublicKey) hosts)) == 16) "")
  (check "inventory: SSH host keys are well-formed ssh-ed25519 keys" (all (h: hostKeyOk h.hostKey) hosts)
    (badNames (h: hostKeyOk h.hostKey)))
  (check "inventory: placeholder keys are marked (placeholderKeys = true and PLACEHOLDER in the key)"
    (all (h: h.placeholderKeys == (builtins.match ".*PLACEHOLDER.*" h.wgPublicKey != null)
      && h.placeholderKeys == (builtins.match ".*PLACEHOLDER.*" h.hostKey != null)) hosts) "")
  (check "inventory: FQDN is <name>.clavitor.com" (all (h: h.fqdn == "${h.name}.clavitor.com") hosts)
    (badNames (h: h.fqdn == "${h.name}.clavitor.com")))
  (check "inventory: edition is community or commercial"
    (all (h: builtins.elem h.edition [ "community" "commercial" ]) hosts) "")
  (check "inventory: SOC admin keys well-formed" (inv.admins != [ ] && all (a: hostKeyOk a.sshKey) inv.admins) "")
  (check "inventory: deploy canary is a spoke, the hub deploys last"
    (builtins.elem inv.deploy.canary names && inv.deploy.canary != (builtins.head hubs).name
      && inv.deploy.last == [ (builtins.head hubs).name ]) "")
  (check "hosts/: one directory with default.nix per inventory host, no others"
    (sort hostDirs == sort names
      && all (n: builtins.pathExists (../../hosts + "/${n}/default.nix")) names)
    "dirs: ${builtins.concatStringsSep " " hostDirs}")
]
