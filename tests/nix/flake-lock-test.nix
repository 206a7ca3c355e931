# Offline checks of flake.lock against the expected pins and of flake.nix's inputs against the lock.
# pinsJson: {"nixpkgs": {rev, lastModified, narHash, original}, ...} parsed from nix-pins.md by
# tests/nix/run.sh (or its built-in copy when ../shared is absent).
{ pinsJson }:
let
  pins = builtins.fromJSON pinsJson;
  lock = builtins.fromJSON (builtins.readFile ../../flake.lock);
  flake = import ../../flake.nix;
  inputs = flake.inputs;
  check = name: ok: msg: { inherit name ok msg; };
  nodes = lock.nodes;
  gh = owner: repo: { type = "github"; inherit owner repo; };
  pinOk =
    node: pin:
    nodes ? ${node}
    && nodes.${node}.locked.rev == pin.rev
    && nodes.${node}.locked.narHash == pin.narHash
    && nodes.${node}.locked.lastModified == pin.lastModified
    && nodes.${node}.locked.type == "github";
  originalUrl =
    o: "github:${o.owner}/${o.repo}" + (if o ? ref then "/${o.ref}" else "");
in
[
  (check "flake.lock: version 7, root node \"root\"" (lock.version == 7 && lock.root == "root") "")
  (check "flake.lock: exactly the nodes root, nixpkgs, agenix, systems"
    (builtins.attrNames nodes == [ "agenix" "nixpkgs" "root" "systems" ]) (builtins.toJSON (builtins.attrNames nodes)))
  (check "flake.lock: nixpkgs pin = nix-pins.md" (pinOk "nixpkgs" pins.nixpkgs) "")
  (check "flake.lock: agenix pin = nix-pins.md" (pinOk "agenix" pins.agenix) "")
  (check "flake.lock: systems pin = nix-pins.md" (pinOk "systems" pins.systems) "")
  (check "flake.lock: originals = nix-pins.md"
    (originalUrl nodes.nixpkgs.original == pins.nixpkgs.original
      && originalUrl nodes.agenix.original == pins.agenix.original
      && originalUrl nodes.systems.original == pins.systems.original) "")
  (check "flake.lock: locked owner/repo match the originals"
    (builtins.all (n: nodes.${n}.locked.owner == nodes.${n}.original.owner && nodes.${n}.locked.repo == nodes.${n}.original.repo)
      [ "nixpkgs" "agenix" "systems" ]) "")
  (check "flake.lock: root inputs are nixpkgs and agenix"
    (nodes.root.inputs == { nixpkgs = "nixpkgs"; agenix = "agenix"; }) "")
  (check "flake.lock: agenix follows nixpkgs, drops darwin and home-manager, keeps systems"
    (nodes.agenix.inputs == { nixpkgs = [ "nixpkgs" ]; darwin = [ ]; home-manager = [ ]; systems = "systems"; }) "")
  (check "flake.nix: inputs are exactly nixpkgs and agenix" (builtins.attrNames inputs == [ "agenix" "nixpkgs" ]) "")
  (check "flake.nix: nixpkgs.url = the locked original" (inputs.nixpkgs.url == originalUrl nodes.nixpkgs.original) "")
  (check "flake.nix: agenix.url = the locked original" (inputs.agenix.url == originalUrl nodes.agenix.original) "")
  (check "flake.nix: agenix follows = the lock (nixpkgs -> nixpkgs, darwin and home-manager -> \"\")"
    (inputs.agenix.inputs == {
      nixpkgs.follows = "nixpkgs";
      darwin.follows = "";
      home-manager.follows = "";
    }) (builtins.toJSON inputs.agenix.inputs))
  (check "flake.nix: outputs is a function of self, nixpkgs, agenix"
    (builtins.functionArgs flake.outputs == { self = false; nixpkgs = false; agenix = false; }) "")
]
