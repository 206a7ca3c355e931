# Offline checks of the pure mesh helper modules/lib/mesh.nix applied to the real inventory.
let
  inv = import ../../hosts/inventory.nix;
  mesh = import ../../modules/lib/mesh.nix inv;
  check = name: ok: msg: { inherit name ok msg; };
  all = builtins.all;
  spokeNames = map (h: h.name) (builtins.filter (h: h.role != "hub") inv.hosts);
  hubIf = mesh.interfaceFor "zurich";
  spokeIfs = map mesh.interfaceFor spokeNames;
  expectedSpokePeer = {
    publicKey = mesh.hub.wgPublicKey;
    allowedIPs = [ "10.84.0.0/24" ];
    endpoint = "zurich.clavitor.com:51820";
    persistentKeepalive = 25;
  };
  peerIPs = builtins.concatMap (p: p.allowedIPs) mesh.hubPeers;
  byName = builtins.listToAttrs (map (h: { name = h.name; value = h; }) inv.hosts);
in
[
  (check "mesh: 15 hub peers" (builtins.length mesh.hubPeers == 15) "found ${toString (builtins.length mesh.hubPeers)}")
  (check "mesh: hub peers are exactly the spokes, each with its own key"
    (builtins.sort builtins.lessThan (map (p: p.name) mesh.hubPeers) == builtins.sort builtins.lessThan spokeNames
      && all (p: p.publicKey == byName.${p.name}.wgPublicKey) mesh.hubPeers) "")
  (check "mesh: each hub peer allows only its spoke's /32"
    (all (p: p.allowedIPs == [ "${byName.${p.name}.wgAddress}/32" ]) mesh.hubPeers) "")
  (check "mesh: hub peer /32s are distinct" (builtins.length peerIPs == 15
    && builtins.length (builtins.attrNames (builtins.listToAttrs (map (i: { name = i; value = 1; }) peerIPs))) == 15) "")
  (check "mesh: hub interface 10.84.0.1/24 listening on 51820 with the 15 peers"
    (hubIf.ips == [ "10.84.0.1/24" ] && hubIf.listenPort == 51820 && builtins.length hubIf.peers == 15
      && all (p: !(p ? name) && !(p ? endpoint)) hubIf.peers) "")
  (check "mesh: every spoke has exactly one peer" (all (i: builtins.length i.peers == 1) spokeIfs) "")
  (check "mesh: every spoke's peer is zurich.clavitor.com:51820, 10.84.0.0/24, keepalive 25"
    (all (i: builtins.head i.peers == expectedSpokePeer) spokeIfs) "")
  (check "mesh: spokes do not listen (no listenPort) and carry their own /24 address"
    (all (n: let i = mesh.interfaceFor n; in !(i ? listenPort) && i.ips == [ "${byName.${n}.wgAddress}/24" ]) spokeNames) "")
  (check "mesh: the tokyo example of infrastructure.md (10.84.0.2/24)"
    ((mesh.interfaceFor "tokyo").ips == [ "10.84.0.2/24" ]) "")
  (check "mesh: a second hub is refused"
    (!(builtins.tryEval (import ../../modules/lib/mesh.nix (inv // { hosts = inv.hosts ++ [ (mesh.hub // { name = "hub2"; }) ]; })).hub).success) "")
]
