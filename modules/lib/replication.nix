# Replication pairs (commercial, issue 14), derived from the inventory. Pure: no nixpkgs needed.
#
#   (import ./modules/lib/replication.nix (import ./hosts/inventory.nix)).settingsFor "tokyo"
#
# A host may name one backup POP: `replication = { backup = "<host>"; publicKey = "<its key>"; }`
# where publicKey is this host's own Ed25519 replication public key (`openssl pkey -pubout`'s
# base64 line). A backup's line may also carry `transportKey`, its HPKE public key (64 hex digits,
# `clavitor replication status`'s `transport_key`): its primaries seal the vaults' data keys to it. Both sides' peer lists come from that one line, never typed twice: the primary's
# `backups` and the backup's `sources`. A host that is some host's backup is role "backup"; a
# backup naming a backup of its own is refused (no cascade, review item 8).
inventory:
let
  hosts = inventory.hosts;
  byName = builtins.listToAttrs (map (h: { name = h.name; value = h; }) hosts);
  repl = h: h.replication or null;
  keyOf =
    h:
    if repl h != null && (repl h) ? publicKey then
      (repl h).publicKey
    else
      throw "inventory: host ${h.name} replicates but has no replication.publicKey";

  primaries = builtins.filter (h: repl h != null && (repl h) ? backup) hosts;
  backupOf =
    h:
    byName.${(repl h).backup}
      or (throw "inventory: host ${h.name} names backup ${(repl h).backup}, which is not in the inventory");
  sourcesOf = name: builtins.filter (p: (repl p).backup == name) primaries;
  isBackup = name: sourcesOf name != [ ];

  # Settings for services.clavitor.replication.settings, or null for a host that does not replicate.
  settingsFor =
    name:
    let
      h = byName.${name} or (throw "inventory: no host ${name}");
      sources = sourcesOf name;
    in
    if isBackup name then
      (
        if repl h != null && (repl h) ? backup then
          throw "inventory: host ${name} is a backup and names a backup of its own (no cascade replication)"
        else
          {
            pop_id = name;
            role = "backup";
            sources = map (p: { id = p.name; public_key = keyOf p; }) sources;
          }
      )
    else if repl h != null && (repl h) ? backup then
      let
        b = backupOf h;
      in
      if b.name == name then
        throw "inventory: host ${name} names itself as its backup"
      else
        {
          pop_id = name;
          role = "primary";
          backups = [
            (
              { id = b.name; url = "https://${b.fqdn}"; public_key = keyOf b; }
              // (if (repl b) ? transportKey then { transport_key = (repl b).transportKey; } else { })
            )
          ];
        }
    else
      null;
in
{
  inherit settingsFor isBackup;
}
