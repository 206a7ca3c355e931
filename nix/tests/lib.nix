# Shared by the VM tests: a three-host test inventory (hub + two spokes) with WireGuard keys that
# are generated when the test is built (throwaway, never in the repo). The public keys are read
# back at evaluation time (import-from-derivation), so the modules see an inventory exactly like
# hosts/inventory.nix.
{ pkgs }:
let
  names = [
    "hub"
    "spoke1"
    "spoke2"
  ];
  keys = pkgs.runCommand "clavitor-test-wg-keys" { nativeBuildInputs = [ pkgs.wireguard-tools ]; } ''
    mkdir $out
    for n in ${toString names}; do
      wg genkey > $out/$n.key
      wg pubkey < $out/$n.key > $out/$n.pub
    done
  '';
  pub = n: pkgs.lib.fileContents "${keys}/${n}.pub";
  real = import ../../hosts/inventory.nix;
  mkHost = i: name: {
    inherit name;
    provider = "test";
    city = name;
    region = "test";
    covers = "test";
    role = if name == "hub" then "hub" else "spoke";
    system = pkgs.stdenv.hostPlatform.system;
    edition = "community";
    # The test driver resolves node names to their (public) eth1 addresses.
    fqdn = name;
    wgAddress = "10.84.0.${toString (i + 1)}";
    wgPublicKey = pub name;
    hostKey = "";
    placeholderKeys = false;
  };
in
{
  inherit keys names;
  inventory = real // {
    hosts = pkgs.lib.imap0 mkHost names;
  };
  privateKey = n: "${keys}/${n}.key";

  # The modules of a fleet node for the VM tests (sshd keys: none needed, the driver uses its
  # backdoor shell). `extra` is one more module.
  fleetNode =
    { self, inventory }:
    name: extra:
    { lib, pkgs, ... }:
    {
      imports = [
        self.nixosModules.default
        extra
      ];
      clavitor.fleet = {
        inherit name inventory;
        secretsDir = ./.; # no *.age here: no agenix secrets in the VM tests
      };
      clavitor.node = {
        enable = true;
        adminKeys = [ ];
      };
      clavitor.wireguardMesh.privateKeyFile = "${keys}/${name}.key";
      services.clavitor.enable = lib.mkDefault false;
      environment.systemPackages = [
        pkgs.netcat
        pkgs.wireguard-tools
        pkgs.curl
      ];
      virtualisation.memorySize = 1024;
    };
}
