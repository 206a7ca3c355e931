# Hardware profile of a Vultr VX1 instance (1 vCPU, 512 MB RAM, 10 GB SSD, KVM, BIOS boot)
# converted with nixos-infect. Values are mkDefault: hosts/<name>/default.nix overrides them with
# what nixos-infect wrote into that machine's hardware-configuration.nix.
{ lib, modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];

  boot.loader.grub.enable = lib.mkDefault true;
  boot.loader.grub.device = lib.mkDefault "/dev/vda";
  boot.initrd.availableKernelModules = [
    "ata_piix"
    "uhci_hcd"
    "virtio_pci"
    "virtio_blk"
    "sr_mod"
  ];
  fileSystems."/" = lib.mkDefault {
    device = "/dev/vda1";
    fsType = "ext4";
  };
  networking.useDHCP = lib.mkDefault true;
  system.stateVersion = lib.mkDefault "25.11";
}
