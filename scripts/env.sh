# Sourced by the other scripts: pinned tool versions and the toolchain on PATH.
#
# One Rust toolchain serves both builds: Debian's rustc-web/cargo-web (in /usr/bin), because
# it can also build the wasm32 standard library from source, which rustup cannot download here.
PNPM_VERSION=10.34.8
# Must equal the `wasm-bindgen` version pinned in Cargo.toml.
WASM_BINDGEN_VERSION=0.2.130
export PATH="/usr/bin:$PATH:$HOME/.cargo/bin"
pnpm() { npx --yes "pnpm@$PNPM_VERSION" "$@"; }
