#!/usr/bin/env bash
# Build the CUDA addon, packages/kronlora/native/kronlora.<triple>.cuda.node, on a machine
# without a GPU or a system CUDA: the compiler, headers and libraries come from NVIDIA's PyPI
# wheels, unpacked (not pip-installed) into .cache/cuda. Nothing here is needed by the CPU build.
#
# CUDA 13: the GPU machine this is checked on has a CUDA 13 driver and CUDA 13 libraries
# (libcublas.so.13, ...) in its PyTorch environment, and candle links those by SONAME, so the
# addon must be built against the same major version. Kernels target sm_90 (Hopper), set by
# CUDA_COMPUTE_CAP below; candle-kernels' builder turns 90 into sm_90a, whose PTX only runs on
# Hopper, so another GPU generation needs its own build (CUDA_COMPUTE_CAP=100 for Blackwell).
#
# The CUDA build has its own cargo target directory (target/cuda), so it never invalidates the
# CPU build. Cost on the 2-core development machine: see ARCHITECTURE.md ("CUDA build").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

root=$PWD/.cache/cuda
wheels=$root/wheels
toolkit=$root/toolkit
# One CUDA 13.0 release, pinned; the wheels are manylinux x86-64.
packages=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.5.25
)

stamp="$toolkit/.packages"
if [[ ! -f $stamp || $(cat "$stamp") != "${packages[*]}" ]]; then
  echo "build-cuda: fetching the CUDA 13 toolkit wheels from PyPI"
  rm -rf "$toolkit" && mkdir -p "$wheels" "$toolkit"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" "${packages[@]}"
  for p in "${packages[@]}"; do
    name=${p%%==*}
    version=${p#*==}
    wheel=$(ls "$wheels/${name//-/_}-$version-"*.whl)
    python3 -m zipfile -e "$wheel" "$root/unpacked"
  done
  # Every wheel puts its files under nvidia/cu13/{bin,include,lib,nvvm}: one toolkit tree.
  cp -a "$root/unpacked/nvidia/cu13/." "$toolkit/"
  rm -rf "$root/unpacked"
  chmod +x "$toolkit"/bin/* "$toolkit"/nvvm/bin/*
  # The linker wants unversioned names; the wheels ship only the SONAMEs.
  for lib in cudart cublas cublasLt curand nvrtc; do
    so=$(cd "$toolkit/lib" && ls lib$lib.so.* | head -n1)
    ln -sf "$so" "$toolkit/lib/lib$lib.so"
  done
  # libcuda is the driver's, never on PyPI: link against a stub with its SONAME that defines
  # every cu* name cuda.h mentions (as the toolkit's own lib/stubs/libcuda.so does; an empty one
  # links the addon but not the test executable, which may leave no symbol undefined). The real
  # driver provides the functions at load time.
  mkdir -p "$toolkit/lib/stubs"
  {
    echo 'int kronlora_libcuda_stub(void) { return 0; }'
    grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\b' "$toolkit/include/cuda.h" | sort -u | sed 's/.*/int &(void) { return 999; }/'
  } > "$root/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$toolkit/lib/stubs/libcuda.so" "$root/stub.c"
  echo "${packages[*]}" > "$stamp"
fi

export CUDA_ROOT=$toolkit CUDA_HOME=$toolkit
export PATH="$toolkit/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=$PWD/target/cuda
# This addon runs on another machine (the GPU's host), so not `target-cpu=native` as the CPU
# build (.cargo/config.toml): x86-64-v3 (AVX2, FMA) runs on any recent x86-64 server, and gemm
# still picks AVX-512 kernels at run time where the CPU has them.
export RUSTFLAGS=${KRONLORA_CUDA_RUSTFLAGS:--C target-cpu=x86-64-v3}
# cudarc's build script reads the CUDA version from `nvcc --version`; nvcc finds cicc and the
# CRT headers through its own relative paths, which the unpacked tree keeps.
nvcc --version | tail -n 2

pnpm install --frozen-lockfile --reporter=append-only
out=$root/addon
rm -rf "$out" && mkdir -p "$out"
echo "build-cuda: native addon with candle's cuda feature (sm_${CUDA_COMPUTE_CAP})"
(cd packages/kronlora && node_modules/.bin/napi build --platform --release --features cuda \
  --manifest-path ../../crates/kronlora-node/Cargo.toml --output-dir "$out" --no-js)
built=$(ls "$out"/kronlora.*.node)
strip --strip-unneeded "$built"
mkdir -p packages/kronlora/native
target=packages/kronlora/native/$(basename "$built" .node).cuda.node
mv "$built" "$target.tmp" && mv "$target.tmp" "$target"
echo "build-cuda: wrote $target ($(du -h "$target" | cut -f1))"
