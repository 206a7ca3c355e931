# The WireGuard hub-and-spoke mesh, derived from the inventory. Pure: no nixpkgs needed.
#
#   let mesh = import ./modules/lib/mesh.nix (import ./hosts/inventory.nix); in mesh.hubPeers
#
# The hub's peer list is computed here from hosts/inventory.nix and never typed anywhere else.
# modules/wireguard-mesh.nix turns `interfaceFor <name>` into networking.wireguard.interfaces.
inventory:
let
  wg = inventory.wireguard;
  hosts = inventory.hosts;

  hubs = builtins.filter (h: h.role == "hub") hosts;
  hub =
    if builtins.length hubs == 1 then
      builtins.head hubs
    else
      throw "inventory: expected exactly one host with role = \"hub\", found ${toString (builtins.length hubs)}";
  spokes = builtins.filter (h: h.role != "hub") hosts;

  byName = builtins.listToAttrs (
    map (h: {
      name = h.name;
      value = h;
    }) hosts
  );

  # Spokes initiate the tunnel to the hub's public name; the hub never dials out.
  hubEndpoint = "${hub.fqdn}:${toString wg.port}";

  # One peer per spoke on the hub, each allowed only its own /32.
  hubPeers = map (h: {
    name = h.name;
    publicKey = h.wgPublicKey;
    allowedIPs = [ "${h.wgAddress}/32" ];
  }) spokes;

  # A spoke's only peer: the hub, carrying the whole management subnet.
  spokePeer = {
    name = hub.name;
    publicKey = hub.wgPublicKey;
    allowedIPs = [ wg.subnet ];
    endpoint = hubEndpoint;
    persistentKeepalive = wg.persistentKeepalive;
  };

  # A peer as networking.wireguard.interfaces.<if>.peers expects it (no bookkeeping name).
  toWireguardPeer = p: builtins.removeAttrs p [ "name" ];

  # The interface of host `name`: addresses, listen port (hub only) and peers.
  interfaceFor =
    name:
    let
      h = byName.${name} or (throw "inventory: no host named ${name}");
      ips = [ "${h.wgAddress}/${toString wg.prefixLength}" ];
    in
    if h.role == "hub" then
      {
        inherit ips;
        listenPort = wg.port;
        peers = map toWireguardPeer hubPeers;
      }
    else
      {
        inherit ips;
        peers = [ (toWireguardPeer spokePeer) ];
      };
in
{
  inherit
    hub
    spokes
    byName
    hubEndpoint
    hubPeers
    spokePeer
    interfaceFor
    ;
  interface = wg.interface;
  port = wg.port;
}
