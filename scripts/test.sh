#!/usr/bin/env bash
# The project's test command (`npm test`): set up and build, the quality gates (scripts/lint.sh),
# then the Rust tests of the core and the vitest suites, which run every case on both backends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
bash scripts/lint.sh
source scripts/env.sh

echo "test: cargo test (kronlora-core)"
# The napi CLI builds kronlora-node with an explicit --target; naming the same target and
# package here unifies dependency features the same way, so its compiled crates are reused.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo test --release --target "$host" -p kronlora-core -p kronlora-node
if [ -f .cache/models/minilm/model.safetensors ] && [ -f .cache/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  echo "test: parity with transformers on the real models in .cache/models"
  cargo test --release --target "$host" -p kronlora-core -p kronlora-node --test integration -- --ignored parity::
else
  echo "test: parity tests skipped (no real models; \`npm run fetch-models\` fetches them)"
fi
echo "test: npm run pack (the tarballs test/install.test.ts installs)"
node scripts/pack.mjs
echo "test: vitest (native and WASM backends, the packed packages, the browser demo in Chromium)"
pnpm exec vitest run
