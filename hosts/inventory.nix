# The Clavitor fleet: plain data, no nixpkgs needed.
#
#   nix-instantiate --eval --strict --json hosts/inventory.nix
#
# Everything else is derived from this file: nixosConfigurations.<name> (flake.nix), the hub's
# WireGuard peer list (modules/lib/mesh.nix), the agenix recipients (secrets/secrets.nix) and the
# rollout order of the deploy app (deploy/deploy.sh). A host is added here and nowhere else
# (plus hosts/<name>/default.nix for its hardware); see docs/operations.md.
#
# !!! PLACEHOLDER KEYS !!!
# Every `wgPublicKey` and `hostKey` below is a well-formed PLACEHOLDER (the base64 literally spells
# "PLACEHOLDER..."), not a real key: no private key exists for any of them. Replace each one with
# the real key when the node is provisioned (docs/operations.md, "Adding a host") and set its
# `placeholderKeys = false`. The flake warns while any host still carries placeholders, and the
# deploy app refuses such a host.
{
  domain = "clavitor.com";

  wireguard = {
    interface = "wg0";
    subnet = "10.84.0.0/24";
    prefixLength = 24;
    port = 51820;
    persistentKeepalive = 25;
  };

  # Rolling deploy order (deploy/deploy.sh): the canary goes first, the hub goes last (if the hub
  # broke early the SOC would lose WireGuard access to every node not yet deployed).
  deploy = {
    canary = "warsaw";
    last = [ "zurich" ];
  };

  # SOC administrators: SSH login as root over WireGuard, and agenix recipients of every secret.
  # PLACEHOLDERS, see above.
  admins = [
    {
      name = "soc-admin-1";
      sshKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxSOCxADMINx10000000000000000000B PLACEHOLDER-soc-admin-1";
    }
    {
      name = "soc-admin-2";
      sshKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxSOCxADMINx20000000000000000000A PLACEHOLDER-soc-admin-2";
    }
  ];

  hosts = [
    {
      name = "zurich";
      provider = "hostkey";
      city = "Zurich";
      region = "Switzerland";
      covers = "SOC hub, Switzerland, DACH backup";
      role = "hub";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "zurich.clavitor.com";
      wgAddress = "10.84.0.1";
      wgPublicKey = "PLACEHOLDERxWGxKEYxzurich000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxzurich000000000000000D PLACEHOLDER-zurich";
      placeholderKeys = true;
    }
    {
      name = "tokyo";
      provider = "vultr";
      city = "Tokyo";
      region = "Asia East";
      covers = "Japan, China-facing (southern)";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "tokyo.clavitor.com";
      wgAddress = "10.84.0.2";
      wgPublicKey = "PLACEHOLDERxWGxKEYxtokyo0000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxtokyo0000000000000000A PLACEHOLDER-tokyo";
      placeholderKeys = true;
    }
    {
      name = "amsterdam";
      provider = "hostkey";
      city = "Amsterdam";
      region = "EU West";
      covers = "EU West, Benelux, Nordics";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "amsterdam.clavitor.com";
      wgAddress = "10.84.0.3";
      wgPublicKey = "PLACEHOLDERxWGxKEYxamsterdam000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxamsterdam000000000000D PLACEHOLDER-amsterdam";
      placeholderKeys = true;
    }
    {
      name = "dubai";
      provider = "hostkey";
      city = "Dubai";
      region = "Middle East";
      covers = "Gulf states, Middle East";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "dubai.clavitor.com";
      wgAddress = "10.84.0.4";
      wgPublicKey = "PLACEHOLDERxWGxKEYxdubai0000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxdubai0000000000000000A PLACEHOLDER-dubai";
      placeholderKeys = true;
    }
    {
      name = "newjersey";
      provider = "vultr";
      city = "New Jersey";
      region = "US East";
      covers = "East coast, finance, enterprise";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "newjersey.clavitor.com";
      wgAddress = "10.84.0.5";
      wgPublicKey = "PLACEHOLDERxWGxKEYxnewjersey000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxnewjersey000000000000D PLACEHOLDER-newjersey";
      placeholderKeys = true;
    }
    {
      name = "siliconvalley";
      provider = "vultr";
      city = "Silicon Valley";
      region = "US West";
      covers = "Startups, AI companies";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "siliconvalley.clavitor.com";
      wgAddress = "10.84.0.6";
      wgPublicKey = "PLACEHOLDERxWGxKEYxsiliconvalley00000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxsiliconvalley00000000A PLACEHOLDER-siliconvalley";
      placeholderKeys = true;
    }
    {
      name = "dallas";
      provider = "vultr";
      city = "Dallas";
      region = "US Central";
      covers = "Middle US, gaming corridor";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "dallas.clavitor.com";
      wgAddress = "10.84.0.7";
      wgPublicKey = "PLACEHOLDERxWGxKEYxdallas000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxdallas000000000000000A PLACEHOLDER-dallas";
      placeholderKeys = true;
    }
    {
      name = "london";
      provider = "vultr";
      city = "London";
      region = "UK";
      covers = "UK dev market";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "london.clavitor.com";
      wgAddress = "10.84.0.8";
      wgPublicKey = "PLACEHOLDERxWGxKEYxlondon000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxlondon000000000000000A PLACEHOLDER-london";
      placeholderKeys = true;
    }
    {
      name = "frankfurt";
      provider = "vultr";
      city = "Frankfurt";
      region = "EU Central";
      covers = "DACH, central Europe";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "frankfurt.clavitor.com";
      wgAddress = "10.84.0.9";
      wgPublicKey = "PLACEHOLDERxWGxKEYxfrankfurt000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxfrankfurt000000000000B PLACEHOLDER-frankfurt";
      placeholderKeys = true;
    }
    {
      name = "warsaw";
      provider = "vultr";
      city = "Warsaw";
      region = "EU East";
      covers = "Eastern Europe, Balkans, Turkey corridor";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "warsaw.clavitor.com";
      wgAddress = "10.84.0.10";
      wgPublicKey = "PLACEHOLDERxWGxKEYxwarsaw000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxwarsaw000000000000000D PLACEHOLDER-warsaw";
      placeholderKeys = true;
    }
    {
      name = "seoul";
      provider = "vultr";
      city = "Seoul";
      region = "Asia East";
      covers = "Korea, China-facing (northern)";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "seoul.clavitor.com";
      wgAddress = "10.84.0.11";
      wgPublicKey = "PLACEHOLDERxWGxKEYxseoul0000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxseoul0000000000000000A PLACEHOLDER-seoul";
      placeholderKeys = true;
    }
    {
      name = "mumbai";
      provider = "vultr";
      city = "Mumbai";
      region = "South Asia";
      covers = "India";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "mumbai.clavitor.com";
      wgAddress = "10.84.0.12";
      wgPublicKey = "PLACEHOLDERxWGxKEYxmumbai000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxmumbai000000000000000A PLACEHOLDER-mumbai";
      placeholderKeys = true;
    }
    {
      name = "saopaulo";
      provider = "vultr";
      city = "São Paulo";
      region = "LATAM";
      covers = "South America";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "saopaulo.clavitor.com";
      wgAddress = "10.84.0.13";
      wgPublicKey = "PLACEHOLDERxWGxKEYxsaopaulo0000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxsaopaulo0000000000000D PLACEHOLDER-saopaulo";
      placeholderKeys = true;
    }
    {
      name = "sydney";
      provider = "vultr";
      city = "Sydney";
      region = "Oceania";
      covers = "Australia, New Zealand";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "sydney.clavitor.com";
      wgAddress = "10.84.0.14";
      wgPublicKey = "PLACEHOLDERxWGxKEYxsydney000000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxsydney000000000000000A PLACEHOLDER-sydney";
      placeholderKeys = true;
    }
    {
      name = "johannesburg";
      provider = "vultr";
      city = "Johannesburg";
      region = "Africa";
      covers = "Africa";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "johannesburg.clavitor.com";
      wgAddress = "10.84.0.15";
      wgPublicKey = "PLACEHOLDERxWGxKEYxjohannesburg000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxjohannesburg000000000B PLACEHOLDER-johannesburg";
      placeholderKeys = true;
    }
    {
      name = "telaviv";
      provider = "vultr";
      city = "Tel Aviv";
      region = "Middle East";
      covers = "Eastern Mediterranean, Israel";
      role = "spoke";
      system = "x86_64-linux";
      edition = "commercial";
      fqdn = "telaviv.clavitor.com";
      wgAddress = "10.84.0.16";
      wgPublicKey = "PLACEHOLDERxWGxKEYxtelaviv00000000000000000=";
      hostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERxHOSTxKEYxtelaviv00000000000000A PLACEHOLDER-telaviv";
      placeholderKeys = true;
    }
  ];
}
