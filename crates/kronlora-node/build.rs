fn main() {
    napi_build::setup();
    // The CUDA build calls the driver API (cuInit, cuMemAlloc, ...) through cudarc, and no other
    // library the addon needs provides those symbols. It links against an empty stub libcuda
    // (scripts/build-cuda.sh), which `--as-needed` would drop, leaving the symbols unbound: the
    // addon would then load anywhere and abort Node at its first CUDA call. Record libcuda.so.1
    // as needed regardless, so that without a driver `require` fails with a catchable error and
    // the TypeScript package falls back to the CPU.
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--push-state,--no-as-needed,-lcuda,--pop-state");
    }
}
