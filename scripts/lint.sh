#!/usr/bin/env bash
# The quality gates: Rust formatting and clippy, then Biome (formatting and lint rules, see
# biome.jsonc) and tsc over the TypeScript. `npm test` runs this after scripts/build.sh and
# before the tests; `npm run lint` builds first too. Any finding fails it, warnings included.
#
# Run it after a build: tsc checks the TypeScript against the bindings' declarations that the
# napi and WASM builds generate from the Rust (packages/kronlora/native/native.d.ts,
# packages/kronlora/wasm/kronlora_wasm.d.ts), so a changed binding fails here until the
# TypeScript follows.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

echo "lint: cargo fmt --check"
cargo fmt --all --check

echo "lint: cargo clippy"
# The target, profile and packages of scripts/test.sh's cargo test (and of the napi build), so
# features unify the same way and clippy reuses their build scripts and proc-macros in target/.
# Debian's cargo-clippy (rust-web-clippy), first on PATH by env.sh, matches rustc-web; rustup's
# clippy would not read the artefacts rustc-web wrote.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo clippy --release --target "$host" -p kronlora-core -p kronlora-node --all-targets -- -D warnings

echo "lint: biome"
colors=()
[ -t 1 ] || colors=(--colors=off) # no escape codes in logs
node_modules/.bin/biome ci --error-on-warnings "${colors[@]}"

echo "lint: tsc"
# tsconfig.json: the package's sources, the tests and vitest.config.ts (no emit).
node_modules/.bin/tsc -p tsconfig.json

echo "lint: all passed"
