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

# The same module twice: Node's CommonJS glue (wasm/, loaded by the worker thread and for the
# synchronous layer API) and the web glue (wasm-web/, an ES module the browser's Web Worker
# imports: `kronlora/browser`). The name section is dropped: it only names functions in stack
# traces and is ~1/3 of the file.
wasm=target/wasm/wasm32-unknown-unknown/release/kronlora_wasm.wasm
for target in nodejs web; do
  out=packages/kronlora/wasm
  [ "$target" = web ] && out=packages/kronlora/wasm-web
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  wasm-bindgen --target "$target" --remove-name-section --remove-producers-section --out-dir "$out.tmp" "$wasm"
  # wasm-bindgen's Node glue is CommonJS inside an ESM package.
  [ "$target" = nodejs ] && echo '{ "type": "commonjs" }' > "$out.tmp/package.json"
  rm -rf "$out" && mv "$out.tmp" "$out"
  echo "WASM backend ($target) written to $out ($(du -h "$out/kronlora_wasm_bg.wasm" | cut -f1))"
done
