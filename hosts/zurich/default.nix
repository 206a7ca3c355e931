# Zurich (hostkey). Per-host overrides only: everything shared comes from the inventory
# (hosts/inventory.nix) and the node profile (modules/node.nix). The provider profile's disk
# defaults apply until this machine's own layout (from the hardware-configuration.nix that
# nixos-infect wrote) is added here, e.g. boot.loader.grub.device and fileSystems."/".
{ ... }:
{
  imports = [ ../common/hostkey.nix ];

  # The SOC hub: WireGuard hub (UDP 51820 public) and Uptime Kuma on 10.84.0.1:3001 are enabled by
  # the node profile from role = "hub" in the inventory. More RAM is worth it here (Kuma, Node.js).
}
