#!/usr/bin/env bash
# Build the WASM backend: kronlora-wasm for wasm32-unknown-unknown (SIMD128, panic=abort),
# then wasm-bindgen's Node glue into packages/kronlora/wasm/.
#
# rustup cannot download the wasm32 standard library here, so std is built from source with
# Debian's rustc-web toolchain (see scripts/setup.sh). This is exactly what `wasm-pack build
# --mode force --no-opt` would run; calling the two steps directly avoids installing wasm-pack.
set -euo pipefail
cd "$(dirname "$0")/.."

RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128 -C panic=abort" \
  /usr/bin/cargo build --release --target wasm32-unknown-unknown \
    -Z build-std=std,panic_abort -p kronlora-wasm --target-dir target/wasm

out=packages/kronlora/wasm
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
wasm-bindgen --target nodejs --out-dir "$out.tmp" \
  target/wasm/wasm32-unknown-unknown/release/kronlora_wasm.wasm
# wasm-bindgen's Node glue is CommonJS inside an ESM package.
echo '{ "type": "commonjs" }' > "$out.tmp/package.json"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "WASM backend written to $out ($(du -h "$out/kronlora_wasm_bg.wasm" | cut -f1))"
