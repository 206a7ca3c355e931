# Offline structural check of flake.nix's outputs. nixpkgs cannot be fetched here, so the outputs
# function is applied to stand-ins that record what it asks for (rustPlatform.buildRustPackage,
# lib.nixosSystem, testers.runNixOSTest return their arguments). What this proves: the output
# names, the package build arguments, 16 nixosConfigurations from the inventory with their host
# modules, the VM tests' nodes and scripts. What it cannot prove: that nixpkgs builds them (the
# flake's own `checks` do that where nix has network access).
#   results      -> list of { name; ok; msg; }
#   testScripts  -> { <check> = python source; } (run.sh syntax-checks them with python3)
let
  flake = import ../../flake.nix;
  inv = import ../../hosts/inventory.nix;
  check = name: ok: msg: { inherit name ok msg; };
  all = builtins.all;
  systems = [ "x86_64-linux" "aarch64-linux" ];
  hasSuffix = s: str:
    let n = builtins.stringLength s; m = builtins.stringLength str; in
    m >= n && builtins.substring (m - n) n str == s;

  stubLib = rec {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap
      (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ]) (builtins.attrNames set));
    inherit hasSuffix;
    hasInfix = infix: s: builtins.match ".*${infix}.*" s != null;
    removeSuffix = suf: s: if hasSuffix suf s then builtins.substring 0 (builtins.stringLength s - builtins.stringLength suf) s else s;
    concatMap = builtins.concatMap;
    optionalAttrs = c: a: if c then a else { };
    fileset = {
      toSource = a: "stub-source";
      difference = a: b: "stub-fileset";
      unions = l: "stub-fileset";
      maybeMissing = p: p;
    };
    nixosSystem = args: { nixosSystemArgs = args; };
    licenses.elastic20 = "Elastic-2.0";
    platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
    # used lazily by nix/tests/lib.nix
    fileContents = p: "STUB-KEY";
    imap0 = f: l: builtins.genList (i: f i (builtins.elemAt l i)) (builtins.length l);
    mkForce = x: x;
  };
  drv = name: { outPath = "/nix/store/stub-${name}"; inherit name; };
  stubPkgs = system: {
    lib = stubLib;
    stdenv.hostPlatform.system = system;
    rustPlatform.buildRustPackage = args: args // { outPath = "/nix/store/stub-${args.pname}"; };
    writeShellApplication = args: args // { outPath = "/nix/store/stub-${args.name}"; };
    writeText = name: text: drv name;
    mkShell = args: args // { shell = true; };
    testers.runNixOSTest = t: t // { isVmTest = true; };
    runCommand = name: env: script: drv name;
  } // builtins.listToAttrs (map (n: { name = n; value = drv n; }) [
    "bash" "openssh" "nixos-rebuild" "jq" "coreutils" "cargo" "rustc" "clippy" "rustfmt"
    "rust-analyzer" "sqlite" "age" "wireguard-tools" "shellcheck" "nixfmt" "curl" "netcat"
  ]);
  nixpkgs = {
    lib = stubLib;
    legacyPackages = stubLib.genAttrs systems stubPkgs;
  };
  agenix = {
    nixosModules.default = { stubAgenixModule = true; };
    packages = stubLib.genAttrs systems (s: { default = drv "agenix"; });
  };
  self = out // { outPath = "/nix/store/stub-self"; };
  out = flake.outputs { inherit self nixpkgs agenix; };

  cargo = builtins.fromTOML (builtins.readFile ../../Cargo.toml);
  minterToml = ../../license-minter/Cargo.toml;
  minterDeclared = builtins.elem "license-minter" (cargo.workspace.members or [ ])
    && builtins.pathExists minterToml
    && builtins.elem "clavitor-license" (map (b: b.name) ((builtins.fromTOML (builtins.readFile minterToml)).bin or [ ]));
  pk = out.packages.x86_64-linux;
  names = map (h: h.name) inv.hosts;
  sort = builtins.sort builtins.lessThan;
  hostOk = h:
    let m = out.nixosConfigurations.${h.name}.nixosSystemArgs.modules; in
    builtins.elem (../../hosts + "/${h.name}") m
    && builtins.any (x: builtins.isAttrs x && (x.clavitor.fleet.name or null) == h.name
      && (x.nixpkgs.hostPlatform or null) == h.system && (x.clavitor.node.enable or false)) m
    && builtins.elem out.nixosModules.default m;
  vm = out.checks.x86_64-linux;
  pending = out.pendingChecks.x86_64-linux;
  scriptHas = t: words: all (w: builtins.match ".*${w}.*" (builtins.replaceStrings [ "\n" ] [ " " ] t.testScript) != null) words;
in
{
  results = [
    (check "flake: packages for x86_64-linux and aarch64-linux" (builtins.attrNames out.packages == sort systems) "")
    (check "flake: packages.{community,commercial,default}"
      (all (s: all (p: out.packages.${s} ? ${p}) [ "community" "commercial" "default" ]) systems) "")
    (check "flake: packages.license-minter exists iff the workspace declares the clavitor-license crate"
      (pk ? license-minter == minterDeclared) "declared: ${if minterDeclared then "yes" else "no"}")
    (check "flake: packages.license-minter builds only -p clavitor-license --bin clavitor-license"
      (minterDeclared && pk.license-minter.cargoBuildFlags == [ "-p" "clavitor-license" "--bin" "clavitor-license" ]
        && pk.license-minter.buildFeatures == [ ]) "")
    (check "flake: default = community" (pk.default == pk.community) "")
    (check "flake: community builds --bin clavitor without features, Cargo.lock vendored"
      (pk.community.buildFeatures == [ ] && pk.community.cargoBuildFlags == [ "--bin" "clavitor" ]
        && pk.community.cargoLock.lockFile == ../../Cargo.lock && pk.community.doCheck) "")
    (check "flake: commercial builds with buildFeatures = [ \"commercial\" ]"
      (pk.commercial.buildFeatures == [ "commercial" ] && pk.commercial.cargoBuildFlags == [ "--bin" "clavitor" ]) "")
    (check "flake: package version = Cargo.toml" (pk.community.version == cargo.package.version) "")
    (check "flake: cargo tests in checkPhase: unit tests plus sandbox-safe integration tests"
      (builtins.elem "--lib" pk.community.cargoTestFlags && builtins.elem "--bins" pk.community.cargoTestFlags) "")
    (check "flake: nixosModules.{clavitor,node,wireguard-mesh,kuma-hub,default}"
      (builtins.attrNames out.nixosModules == [ "clavitor" "default" "kuma-hub" "node" "wireguard-mesh" ]) "")
    (check "flake: nixosConfigurations = the 16 inventory hosts" (sort (builtins.attrNames out.nixosConfigurations) == sort names) "")
    (check "flake: each nixosConfiguration = default module + hosts/<name> + its inventory name and system"
      (all hostOk inv.hosts) "")
    (check "flake: checks = packages + VM tests (vault node, WireGuard mesh)"
      (all (s: builtins.attrNames out.checks.${s} == [ "commercial" "community" "vm-vault-node" "vm-wireguard-mesh" ]) systems) "")
    (check "flake: pendingChecks.vm-kuma-push (waits for the Kuma push flag)" (pending ? vm-kuma-push) "")
    (check "flake: apps.deploy runs the deploy script"
      (all (s: out.apps.${s}.deploy.type == "app" && hasSuffix "/bin/clavitor-deploy" out.apps.${s}.deploy.program) systems) "")
    (check "flake: devShells.default and formatter" (all (s: out.devShells.${s} ? default && out.formatter.${s} ? outPath) systems) "")
    (check "vm test vault-node: runNixOSTest with one machine"
      (vm.vm-vault-node.isVmTest && builtins.attrNames vm.vm-vault-node.nodes == [ "machine" ]
        && builtins.isFunction vm.vm-vault-node.nodes.machine) "")
    (check "vm test vault-node: waits for the unit, probes /healthz, checks hardening"
      (scriptHas vm.vm-vault-node [ "wait_for_unit\\(\"clavitor.service\"\\)" "/healthz" "clavitor-health" "CapEff" "master-key" ]) "")
    (check "vm test wireguard-mesh: hub + two spokes"
      (vm.vm-wireguard-mesh.isVmTest && builtins.attrNames vm.vm-wireguard-mesh.nodes == [ "hub" "spoke1" "spoke2" ]) "")
    (check "vm test wireguard-mesh: pings over WireGuard, sshd unreachable on the public address"
      (scriptHas vm.vm-wireguard-mesh [ "ping -c1 -W1 10.84.0.1" "nc -z -w 3 10.84.0.1 22" "fail\\(\"nc -z -w 3 hub 22\"\\)" ]) "")
    (check "vm test kuma-push: hub + spoke, push recorded by Kuma"
      (pending.vm-kuma-push.isVmTest && builtins.attrNames pending.vm-kuma-push.nodes == [ "hub" "spoke1" ]
        && scriptHas pending.vm-kuma-push [ "uptime-kuma.service" "heartbeat" "push_token" ]) "")
  ];
  testScripts = {
    vm-vault-node = vm.vm-vault-node.testScript;
    vm-wireguard-mesh = vm.vm-wireguard-mesh.testScript;
    vm-kuma-push = pending.vm-kuma-push.testScript;
  };
}
