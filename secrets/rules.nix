# Which agenix secrets exist and who can decrypt each one. Pure function of the inventory, so the
# offline test (tests/nix/run.sh) applies the very same rules to throwaway keys it generates.
#
# Per host <name>, three secrets, each encrypted to that host's SSH host key and the SOC admins
# (never to another host):
#   wg-<name>.age          WireGuard private key            -> age.secrets.wireguard-private-key
#   master-key-<name>.age  Clavitor node master key (32 B)  -> services.clavitor.masterKeyFile
#   kuma-push-<name>.age   Kuma push URL of its monitor     -> services.clavitor credential kuma-push-url
inventory:
let
  admins = map (a: a.sshKey) inventory.admins;
  kinds = [
    "wg"
    "master-key"
    "kuma-push"
  ];
  forHost =
    h:
    map (kind: {
      name = "${kind}-${h.name}.age";
      value.publicKeys = [ h.hostKey ] ++ admins;
    }) kinds;
in
builtins.listToAttrs (builtins.concatMap forHost inventory.hosts)
