# NixOS VM test: the hub and two spokes of the management mesh, built from a test inventory by the
# real modules (node + wireguard-mesh).
#   nix build .#checks.x86_64-linux.vm-wireguard-mesh   (needs KVM and the binary cache)
#
# Checks: each spoke reaches the hub over WireGuard and the hub reaches each spoke; spokes do not
# reach each other (the hub does not forward); sshd answers on the WireGuard address and not on
# the public (eth1) address; the public side has 80/443 open only.
{ self, pkgs }:
let
  t = import ./lib.nix { inherit pkgs; };
  node = t.fleetNode {
    inherit self;
    inherit (t) inventory;
  };
in
pkgs.testers.runNixOSTest {
  name = "clavitor-wireguard-mesh";

  nodes = {
    hub = node "hub" { };
    spoke1 = node "spoke1" { };
    spoke2 = node "spoke2" { };
  };

  testScript = ''
    start_all()
    for m in (hub, spoke1, spoke2):
        m.wait_for_unit("wireguard-wg0.service")
        m.wait_for_unit("sshd.service")

    with subtest("hub <-> spokes over WireGuard"):
        spoke1.wait_until_succeeds("ping -c1 -W1 10.84.0.1", timeout=60)
        spoke2.wait_until_succeeds("ping -c1 -W1 10.84.0.1", timeout=60)
        hub.succeed("ping -c1 -W1 10.84.0.2")
        hub.succeed("ping -c1 -W1 10.84.0.3")
        peers = hub.succeed("wg show wg0 peers").split()
        assert len(peers) == 2, f"hub peers: {peers}"
        hub.succeed("wg show wg0 allowed-ips | grep -q '10.84.0.2/32'")
        hub.succeed("wg show wg0 allowed-ips | grep -q '10.84.0.3/32'")
        spoke1.succeed("wg show wg0 endpoints | grep -q ':51820'")
        spoke1.succeed("wg show wg0 persistent-keepalive | grep -q 25")

    with subtest("spokes are isolated from each other"):
        spoke1.fail("ping -c1 -W1 10.84.0.3")

    with subtest("sshd: WireGuard address only"):
        spoke1.succeed("nc -z -w 3 10.84.0.1 22")
        hub.succeed("nc -z -w 3 10.84.0.2 22")
        # 'hub' and 'spoke1' resolve to the public (eth1) addresses
        spoke1.fail("nc -z -w 3 hub 22")
        hub.fail("nc -z -w 3 spoke1 22")
        hub.succeed("ss -tlnH 'sport = :22' | grep -q '10.84.0.1:22'")
        hub.fail("ss -tlnH 'sport = :22' | grep -v '10.84.0.1:22' | grep -q .")

    with subtest("public firewall: 80/443 and the hub's UDP 51820 only"):
        hub.succeed("iptables -S nixos-fw | grep -q -- '--dport 443'")
        hub.fail("iptables -S nixos-fw | grep -v wg0 | grep -q -- '--dport 22 '")
  '';
}
