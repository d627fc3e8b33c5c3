#!/usr/bin/env bash
# Install what building and testing kronlora needs: Debian packages (Rust toolchain with wasm32
# std sources, the wasm linker, Chromium for the browser test), the wasm-bindgen CLI and pnpm.
# What is already installed is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

node_major=$(node -p 'process.versions.node.split(".").map(Number).slice(0,2).join(".")')
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=17)?0:1)'; then
  echo "setup: kronlora needs Node.js 20.17 or newer, found $node_major" >&2
  exit 1
fi

# chromium: the browser the browser-demo test drives headless (test/browser.test.ts).
apt_packages=(rustc-web cargo-web rust-web-src rust-web-clippy rustfmt-web lld gcc libc6-dev chromium)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup: kronlora needs these Debian packages, and installing them needs root. Run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    echo "then run this command again." >&2
    exit 1
  fi
fi

if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  echo "setup: installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (once; a few minutes)"
  # Not --locked: its lock file pins a webpki-roots release that crates.io no longer serves.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

pnpm --version >/dev/null
