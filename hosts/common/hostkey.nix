# Hardware profile of a Hostkey VPS (KVM, BIOS boot) converted with nixos-infect. Values are
# mkDefault: hosts/<name>/default.nix overrides them with what nixos-infect wrote into that
# machine's hardware-configuration.nix (Hostkey may also hand out static addressing).
{ lib, modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];

  boot.loader.grub.enable = lib.mkDefault true;
  boot.loader.grub.device = lib.mkDefault "/dev/sda";
  boot.initrd.availableKernelModules = [
    "ata_piix"
    "uhci_hcd"
    "virtio_pci"
    "virtio_scsi"
    "sd_mod"
    "sr_mod"
  ];
  fileSystems."/" = lib.mkDefault {
    device = "/dev/sda1";
    fsType = "ext4";
  };
  networking.useDHCP = lib.mkDefault true;
  system.stateVersion = lib.mkDefault "25.11";
}
