#!/usr/bin/env bash
# Build everything the package needs: JS dependencies, the native addon, the WASM backend and
# the TypeScript. Cargo and pnpm skip what is up to date, so reruns are quick.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

pnpm install --frozen-lockfile --reporter=append-only
echo "build: native addon (napi-rs)"
(cd packages/kronlora && node_modules/.bin/napi build --platform --release \
  --manifest-path ../../crates/kronlora-node/Cargo.toml --output-dir native --no-js --dts native.d.ts \
  ${KRONLORA_FEATURES:+--features "$KRONLORA_FEATURES"})
echo "build: WASM backend"
bash scripts/build-wasm.sh
echo "build: TypeScript"
(cd packages/kronlora && node_modules/.bin/tsc -p tsconfig.json)
