# NixOS VM test: a spoke's Clavitor pushes its status to Uptime Kuma on the hub over WireGuard.
#   nix build .#pendingChecks.x86_64-linux.vm-kuma-push   (needs KVM and the binary cache)
#
# PENDING: the binary's Kuma push (--kuma-push-url-file, the typed option kumaPushUrlFile) exists
# now and is tested against a loopback receiver in tests/node.rs; this VM test has not yet been run
# on a machine with KVM. Move it into `checks` once it has passed there.
#
# The push monitor is created directly in Kuma's SQLite database (the push route looks the token
# up there), standing in for the SOC's manual step of docs/operations.md.
{ self, pkgs }:
let
  t = import ./lib.nix { inherit pkgs; };
  node = t.fleetNode {
    inherit self;
    inherit (t) inventory;
  };
  token = "clavitortestpush01";
in
pkgs.testers.runNixOSTest {
  name = "clavitor-kuma-push";

  nodes = {
    hub = node "hub" {
      environment.systemPackages = [ pkgs.sqlite ];
      virtualisation.memorySize = pkgs.lib.mkForce 2048;
    };
    spoke1 = node "spoke1" (
      { lib, ... }:
      {
        services.clavitor = {
          enable = lib.mkForce true;
          edition = "community";
          masterKeyFile = "/run/clavitor-test/master.key";
          kumaPushUrlFile = "/run/clavitor-test/kuma-push-url";
          kumaIntervalSecs = 5;
          # No Let's Encrypt from the VM (and test host names have no dot): plain loopback only.
          acme.domains = lib.mkForce [ ];
        };
        systemd.services.clavitor-test-secrets = {
          wantedBy = [ "multi-user.target" ];
          before = [ "clavitor.service" ];
          requiredBy = [ "clavitor.service" ];
          serviceConfig.Type = "oneshot";
          serviceConfig.RemainAfterExit = true;
          script = ''
            install -d -m 0700 /run/clavitor-test
            head -c 32 /dev/urandom > /run/clavitor-test/master.key
            echo "http://10.84.0.1:3001/api/push/${token}?status=up&msg=OK&ping=" > /run/clavitor-test/kuma-push-url
            chmod 0600 /run/clavitor-test/*
          '';
        };
      }
    );
  };

  testScript = ''
    start_all()
    hub.wait_for_unit("uptime-kuma.service")
    hub.wait_for_open_port(3001, "10.84.0.1", timeout=300)

    with subtest("Kuma listens on the WireGuard address only"):
        hub.fail("ss -tlnH 'sport = :3001' | grep -v '10.84.0.1:3001' | grep -q .")
        spoke1.wait_until_succeeds("curl -fsS -o /dev/null http://10.84.0.1:3001/", timeout=120)
        spoke1.fail("curl -fsS -m 3 -o /dev/null http://hub:3001/")

    with subtest("create the push monitor (the SOC's step)"):
        db = "/var/lib/uptime-kuma/kuma.db"
        hub.wait_until_succeeds(f"sqlite3 {db} 'select count(*) from monitor'", timeout=120)
        hub.succeed(
            f"sqlite3 {db} \"insert into monitor (name, type, push_token, interval, active, retry_interval, maxretries) "
            "values ('spoke1', 'push', '${token}', 30, 1, 30, 1)\""
        )

    with subtest("spoke1's Clavitor pushes; Kuma records it as up"):
        spoke1.systemctl("restart clavitor.service")
        spoke1.wait_for_unit("clavitor.service")
        hub.wait_until_succeeds(
            f"test $(sqlite3 {db} \"select count(*) from heartbeat h join monitor m on h.monitor_id = m.id "
            "where m.push_token = '${token}' and h.status = 1\") -ge 1",
            timeout=120,
        )
  '';
}
