# Sydney (vultr). Per-host overrides only: everything shared comes from the inventory
# (hosts/inventory.nix) and the node profile (modules/node.nix). The provider profile's disk
# defaults apply until this machine's own layout (from the hardware-configuration.nix that
# nixos-infect wrote) is added here, e.g. boot.loader.grub.device and fileSystems."/".
{ ... }:
{
  imports = [ ../common/vultr.nix ];

}
