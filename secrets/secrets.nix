# agenix recipients file (read by the `agenix` CLI: run it from this directory).
# The rules live in ./rules.nix; hosts and admin keys in ../hosts/inventory.nix.
# NOTE: while the inventory carries PLACEHOLDER keys, nothing may be encrypted with this file:
# the placeholders have no private keys, so such a secret could never be decrypted.
import ./rules.nix (import ../hosts/inventory.nix)
