# Offline checks of modules/lib/replication.nix: the pairs derived from a throwaway inventory.
let
  r = import ../../modules/lib/replication.nix;
  check = name: ok: msg: { inherit name ok msg; };
  host = name: extra: { inherit name; fqdn = "${name}.example"; } // extra;
  inv = {
    hosts = [
      (host "calgary" { replication = { backup = "zurich"; publicKey = "KEY-calgary"; }; })
      (host "tokyo" { replication = { backup = "zurich"; publicKey = "KEY-tokyo"; }; })
      (host "zurich" { replication = { publicKey = "KEY-zurich"; transportKey = "TK-zurich"; }; })
      (host "lonely" { })
    ];
  };
  d = r inv;
  fails = x: !(builtins.tryEval (builtins.deepSeq x null)).success;
  cascade = r {
    hosts = [
      (host "a" { replication = { backup = "b"; publicKey = "A"; }; })
      (host "b" { replication = { backup = "c"; publicKey = "B"; }; })
      (host "c" { replication = { publicKey = "C"; }; })
    ];
  };
in
[
  (check "replication: a primary's backups come from its own inventory line"
    (d.settingsFor "calgary" == {
      pop_id = "calgary";
      role = "primary";
      backups = [ { id = "zurich"; url = "https://zurich.example"; public_key = "KEY-zurich"; transport_key = "TK-zurich"; } ];
    })
    (builtins.toJSON (d.settingsFor "calgary")))
  (check "replication: the backup's sources are every host naming it"
    (d.settingsFor "zurich" == {
      pop_id = "zurich";
      role = "backup";
      sources = [ { id = "calgary"; public_key = "KEY-calgary"; } { id = "tokyo"; public_key = "KEY-tokyo"; } ];
    })
    (builtins.toJSON (d.settingsFor "zurich")))
  (check "replication: a host without a backup does not replicate" (d.settingsFor "lonely" == null) "")
  (check "replication: a backup naming a backup of its own is refused (no cascade)" (fails (cascade.settingsFor "b")) "")
  (check "replication: a missing backup host is refused"
    (fails ((r { hosts = [ (host "a" { replication = { backup = "nope"; publicKey = "A"; }; }) ]; }).settingsFor "a")) "")
  (check "replication: the fleet inventory evaluates for every host"
    (let i = import ../../hosts/inventory.nix; in builtins.all (h: (builtins.tryEval (builtins.deepSeq ((r i).settingsFor h.name) true)).success) i.hosts) "")
]
