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

# One module, two glues: the web glue (wasm-web/, an ES module the browser's Web Worker imports:
# `kronlora/browser`) and Node's CommonJS glue (wasm/, loaded by the worker thread and for the
# synchronous layer API). wasm-bindgen writes the same .wasm for both, so Node's glue is pointed
# at wasm-web/'s copy and the package carries it once. The name section is dropped: it only
# names functions in stack traces and is ~1/3 of the file.
wasm=target/wasm/wasm32-unknown-unknown/release/kronlora_wasm.wasm
for target in web nodejs; do
  out=packages/kronlora/wasm-web
  [ "$target" = nodejs ] && out=packages/kronlora/wasm
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  wasm-bindgen --target "$target" --remove-name-section --remove-producers-section --out-dir "$out.tmp" "$wasm"
  if [ "$target" = nodejs ]; then
    # wasm-bindgen's Node glue is CommonJS inside an ESM package.
    echo '{ "type": "commonjs" }' > "$out.tmp/package.json"
    glue="$out.tmp/kronlora_wasm.js"
    line='const wasmPath = `${__dirname}/kronlora_wasm_bg.wasm`;'
    if cmp -s "$out.tmp/kronlora_wasm_bg.wasm" packages/kronlora/wasm-web/kronlora_wasm_bg.wasm && grep -qxF "$line" "$glue"; then
      sed -i 's#^const wasmPath = `${__dirname}/kronlora_wasm_bg.wasm`;$#const wasmPath = `${__dirname}/../wasm-web/kronlora_wasm_bg.wasm`;#' "$glue"
      rm "$out.tmp/kronlora_wasm_bg.wasm"
    else
      echo "build-wasm: the Node glue keeps its own .wasm (it differs from the web one, or wasm-bindgen's glue changed)"
    fi
  fi
  rm -rf "$out" && mv "$out.tmp" "$out"
done
echo "WASM backend written to packages/kronlora/wasm-web and wasm ($(du -h packages/kronlora/wasm-web/kronlora_wasm_bg.wasm | cut -f1))"
