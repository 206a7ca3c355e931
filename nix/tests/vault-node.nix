# NixOS VM test: one machine serving the vault through services.clavitor.
#   nix build .#checks.x86_64-linux.vm-vault-node      (needs KVM and the binary cache)
#
# Checks: the unit starts, /healthz answers (also through the `clavitor-health` command the deploy
# app runs), the process runs as the dynamic user with only CAP_NET_BIND_SERVICE, the master key
# arrives through LoadCredential (never in the store), state lives in the StateDirectory and
# survives a restart.
{ self, pkgs }:
pkgs.testers.runNixOSTest {
  name = "clavitor-vault-node";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.clavitor ];

      services.clavitor = {
        enable = true;
        listen = "127.0.0.1:8080";
        masterKeyFile = "/run/clavitor-test/master.key";
        logFormat = "json";
      };

      # A throwaway master key made at boot (32 random bytes), root-only, outside the store.
      systemd.services.clavitor-test-key = {
        wantedBy = [ "multi-user.target" ];
        before = [ "clavitor.service" ];
        requiredBy = [ "clavitor.service" ];
        serviceConfig.Type = "oneshot";
        serviceConfig.RemainAfterExit = true;
        script = ''
          install -d -m 0700 /run/clavitor-test
          head -c 32 /dev/urandom > /run/clavitor-test/master.key
          chmod 0600 /run/clavitor-test/master.key
        '';
      };

      environment.systemPackages = [ pkgs.curl ];
    };

  testScript = ''
    machine.wait_for_unit("clavitor.service")
    machine.wait_for_open_port(8080, "127.0.0.1")

    with subtest("healthz answers, directly and through clavitor-health"):
        machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/healthz")
        machine.succeed("clavitor-health")
        machine.succeed("clavitor version")

    with subtest("hardened unit"):
        pid = machine.succeed("systemctl show -p MainPID --value clavitor").strip()
        user = machine.succeed(f"ps -o user= -p {pid}").strip()
        assert user == "clavitor", f"runs as {user!r}"
        capeff = machine.succeed(f"grep CapEff /proc/{pid}/status").split()[1]
        # CAP_NET_BIND_SERVICE is bit 10 only
        assert int(capeff, 16) == 1 << 10, f"CapEff {capeff}"
        machine.succeed("systemctl show clavitor -p ProtectSystem | grep -q strict")
        machine.succeed("systemctl show clavitor -p NoNewPrivileges | grep -q yes")
        # the key is passed as the credential copy, readable by the service user only
        machine.succeed(
            f"tr '\\0' ' ' < /proc/{pid}/cmdline"
            " | grep -q -- '--master-key-file=/run/credentials/clavitor.service/master-key'"
        )

    with subtest("state in the StateDirectory, kept across a restart"):
        machine.succeed("test -d /var/lib/private/clavitor")
        machine.succeed("test -e /var/lib/private/clavitor/node.db")
        machine.systemctl("restart clavitor.service")
        machine.wait_for_unit("clavitor.service")
        machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/healthz")
  '';
}
