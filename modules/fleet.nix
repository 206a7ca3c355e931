# Options shared by the fleet modules (node, wireguard-mesh, kuma-hub): which inventory host this
# machine is, and where its agenix secrets live. Imported by each of them (deduplicated by path).
{ config, lib, ... }:
let
  inherit (lib) mkOption types literalExpression;
  cfg = config.clavitor.fleet;
in
{
  options.clavitor.fleet = {
    name = mkOption {
      type = types.str;
      example = "tokyo";
      description = "This machine's name in the inventory (`hosts[].name`).";
    };

    inventory = mkOption {
      type = types.attrs;
      default = import ../hosts/inventory.nix;
      defaultText = literalExpression "import ./hosts/inventory.nix";
      description = "The fleet inventory (plain data, see hosts/inventory.nix).";
    };

    secretsDir = mkOption {
      type = types.path;
      default = ../secrets;
      defaultText = literalExpression "./secrets";
      description = ''
        Directory of the agenix `*.age` files (recipients in secrets.nix). A secret whose file
        does not exist yet is not declared, and a warning says so.
      '';
    };

    host = mkOption {
      type = types.attrs;
      readOnly = true;
      internal = true;
      default = (import ./lib/mesh.nix cfg.inventory).byName.${cfg.name}
        or (throw "clavitor.fleet.name = \"${cfg.name}\" is not in the inventory");
      description = "This machine's inventory record (derived).";
    };

    mesh = mkOption {
      type = types.attrs;
      readOnly = true;
      internal = true;
      default = import ./lib/mesh.nix cfg.inventory;
      description = "The mesh helper applied to the inventory (derived).";
    };
  };
}
