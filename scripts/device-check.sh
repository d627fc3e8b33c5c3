#!/usr/bin/env bash
# The GPU check, in two halves.
#
#   bash scripts/device-check.sh prepare         on this (CPU) machine: build the CUDA addon and the
#                                                CUDA integration-test binary, and pack them with the
#                                                package's dist/ and an xz'd node into .cache/device-check
#   bash scripts/device-check.sh run             on the GPU machine (an H200 with a CUDA 13 driver,
#                                                PyTorch and PEFT, no Rust, no Node), from the repository
#                                                root, with .cache/device-check carried there
#   bash scripts/device-check.sh run --dry-run   the same steps on this machine's CPU with small models:
#                                                checks the plumbing, not the GPU
#
# `run` prints and saves under $OUT (or .cache/device-check/out):
#   1. CUDA vs CPU parity on MiniLM- and SmolLM2-shaped models (logits, every adapter gradient,
#      one AdamW step; f32 to 1e-4): the `device_parity` tests of the integration binary;
#   2. kronlora training throughput and peak GPU memory, Kron-LoRA and LoRA, on a MiniLM-sized
#      encoder (batch 32 × 128) and a SmolLM2-sized decoder (batch 8 × 512), through the CUDA
#      addon with device "auto" (so the run-time selection is checked too);
#   3. PyTorch + PEFT (LoRA and LoKr) on the same models and data, same GPU, same run.
# Budget: under 8 minutes on the GPU machine (the models are written there, not carried).
set -euo pipefail
cd "$(dirname "$0")/.."
pack=$PWD/.cache/device-check

prepare() {
  source scripts/env.sh
  bash scripts/build.sh
  bash scripts/build-cuda.sh
  echo "device-check: CUDA integration-test binary"
  local toolkit=$PWD/.cache/cuda/toolkit
  local binary host
  # The addon's target triple, so the test build reuses its compiled CUDA kernels.
  host=$(rustc -vV | sed -n 's/host: //p')
  binary=$(
    RUSTFLAGS=${KRONLORA_CUDA_RUSTFLAGS:--C target-cpu=x86-64-v3} \
      CUDA_ROOT=$toolkit CUDA_HOME=$toolkit PATH="$toolkit/bin:$PATH" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} \
      CARGO_TARGET_DIR=$PWD/target/cuda cargo test --release --target "$host" --features cuda -p kronlora-core \
      --test integration --no-run --message-format=json |
      node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){if(!l)continue;const m=JSON.parse(l);if(m.reason==="compiler-artifact"&&m.executable&&m.target.name==="integration")console.log(m.executable)}})' |
      tail -n1
  )
  rm -rf "$pack" && mkdir -p "$pack/kronlora/native"
  cp -r packages/kronlora/dist packages/kronlora/package.json "$pack/kronlora/"
  strip --strip-unneeded -o "$pack/integration" "$binary"
  local addon
  addon=$(ls packages/kronlora/native/kronlora.*.cuda.node)
  cp "$addon" "$pack/kronlora/native/"
  cp "$(command -v node)" "$pack/node"
  echo "device-check: compressing"
  xz -T2 -6 "$pack/integration" "$pack/node" "$pack/kronlora/native/$(basename "$addon")"
  du -sh "$pack"
  find "$pack" -type f -size +1M -exec du -h {} +
  local bytes
  bytes=$(du -sb "$pack" | cut -f1)
  if ((bytes > 60 * 1024 * 1024)); then
    echo "device-check: $pack is $((bytes / 1024 / 1024)) MiB; the GPU machine accepts 64 MiB" >&2
    exit 1
  fi
}

# Dry run only: the CUDA addon (if built) against CUDA's real cuBLAS and cuRAND from the wheels
# and a stand-in libcuda.so.1 that reports no device, as on a machine with the driver installed
# but no GPU. The addon must load, count 0 GPUs, and `auto` must fall back to the CPU addon with
# the one warning; an explicit `cuda` must fail with the reason.
no_gpu_driver() {
  local work=$1
  local addon
  addon=$(ls packages/kronlora/native/kronlora.*.cuda.node 2>/dev/null || true)
  echo "== 0. the CUDA addon where the driver sees no GPU"
  if [[ -z $addon ]]; then
    echo "no CUDA addon built (npm run build:cuda): skipped"
    return
  fi
  mkdir -p "$work/no-gpu"
  {
    echo 'typedef int CUresult; /* every call: CUDA_ERROR_NO_DEVICE */'
    echo 'CUresult cuDeviceGetCount(int *n) { *n = 0; return 100; }'
    echo 'CUresult cuGetErrorString(CUresult e, const char **s) { (void)e; *s = "no CUDA-capable device is detected"; return 0; }'
    echo 'CUresult cuGetErrorName(CUresult e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }'
    nm -D --undefined-only "$addon" | awk '{print $2}' | sed 's/@.*//' | grep -E '^cu[A-Z]' |
      grep -vE '^cu(DeviceGetCount|GetErrorString|GetErrorName)$' | sort -u | sed 's/.*/CUresult &(void) { return 100; }/'
  } > "$work/no-gpu/libcuda.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$work/no-gpu/libcuda.so.1" "$work/no-gpu/libcuda.c"
  local report
  report=$(
    LD_LIBRARY_PATH=$work/no-gpu:$PWD/.cache/cuda/toolkit/lib KRONLORA_CUDA_ADDON=$PWD/$addon node --input-type=module -e "
      import { loadModel } from '$PWD/packages/kronlora/dist/index.js';
      const m = await loadModel('$work/models/encoder', { device: 'auto' });
      console.log('auto ->', m.backend, m.device);
      try { await loadModel('$work/models/encoder', { device: 'cuda' }); console.log('cuda -> loaded?!'); }
      catch (e) { console.log('cuda ->', e.code, e.message); }" 2>&1
  )
  echo "$report"
  grep -q 'auto -> native cpu' <<< "$report" && grep -q 'loaded but sees no GPU' <<< "$report" &&
    grep -q 'cuda -> ERR_UNSUPPORTED' <<< "$report" && [[ $(grep -c KRONLORA_NO_CUDA <<< "$report") == 1 ]] ||
    { echo "device-check: the CUDA addon did not fall back as it should" >&2; exit 1; }
}

run() {
  local dry=${1:-}
  local out=${OUT:-$pack/out}
  local work=/tmp/kronlora-device-check
  mkdir -p "$out" "$work"
  local log=$out/device-check.log
  exec > >(tee "$log") 2>&1
  local start=$SECONDS
  local python=${PYTHON:-python3}
  local node integration package=$pack/kronlora device=cuda kron_device=auto
  local enc_layers=6 dec_layers=30 vocab=0 steps=10 warmup=3 records=400
  if [[ $dry == --dry-run ]]; then
    # The CPU build: node, the integration binary and the package as built here.
    node=$(command -v node)
    source scripts/env.sh
    local host
    host=$(rustc -vV | sed -n 's/host: //p')
    integration=$(ls -t "target/$host/release/deps/integration-"* 2>/dev/null | grep -v '\.d$' | head -n1 || true)
    [[ -n $integration ]] || { echo "device-check: no integration binary; run npm test first" >&2; exit 1; }
    package=$PWD/packages/kronlora device=cpu kron_device=cpu
    enc_layers=1 dec_layers=1 vocab=2000 steps=2 warmup=1 records=40
    python=${PYTHON:-/work/pyvenv/bin/python}
  else
    for f in "$pack/node.xz" "$pack/integration.xz"; do
      [[ -f $f ]] || { echo "device-check: $f missing; run 'scripts/device-check.sh prepare' and carry .cache/device-check" >&2; exit 1; }
    done
    "$python" -c 'import lzma,shutil,sys
for src,dst in zip(sys.argv[1::2],sys.argv[2::2]):
    with lzma.open(src) as i, open(dst,"wb") as o: shutil.copyfileobj(i,o)' \
      "$pack/node.xz" "$work/node" "$pack/integration.xz" "$work/integration"
    rm -rf "$work/kronlora" && cp -r "$pack/kronlora" "$work/kronlora"
    local addon
    addon=$(ls "$work"/kronlora/native/*.cuda.node.xz)
    "$python" -c 'import lzma,shutil,sys
with lzma.open(sys.argv[1]) as i, open(sys.argv[2],"wb") as o: shutil.copyfileobj(i,o)' "$addon" "${addon%.xz}"
    rm "$addon"
    chmod +x "$work/node" "$work/integration"
    node=$work/node integration=$work/integration package=$work/kronlora
    # The CUDA libraries the addon links (cuBLAS, cuRAND, NVRTC, cudart) from PyTorch's wheels.
    local libs
    libs=$("$python" -c 'import glob,os,nvidia
roots=[p for p in nvidia.__path__]
print(":".join(sorted({os.path.dirname(f) for r in roots for f in glob.glob(r+"/**/lib*.so*",recursive=True)})))')
    export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  fi
  echo "device-check: $(date -u +%FT%TZ) on $(hostname), device $device${dry:+ (dry run)}"

  "$python" bench/device_train.py models "$work/models" --layers-encoder $enc_layers --layers-decoder $dec_layers \
    --vocab $vocab --records $records 2>&1 | grep -v 'Writing model shards' || true
  if [[ $dry == --dry-run ]]; then
    no_gpu_driver "$work"
  fi

  echo "== 1. parity"
  if [[ $dry == --dry-run ]]; then
    "$integration" --exact device_parity::the_composed_forms_other_devices_run_match_the_fused_kernels_on_whole_models --nocapture
  else
    "$integration" --ignored --exact device_parity::cuda_matches_the_cpu_on_minilm_and_smollm2_shapes --nocapture
  fi

  echo "== 2-3. training throughput (kronlora, PyTorch + PEFT)"
  local results=$out/device-check.jsonl
  : > "$results"
  local shapes=("encoder classification cls 32 128" "decoder causal-lm lm 8 512")
  [[ $dry == --dry-run ]] && shapes=("encoder classification cls 4 128" "decoder causal-lm lm 2 64")
  for shape in "${shapes[@]}"; do
    read -r name task peft_task batch length <<< "$shape"
    for adapter in kron-lora lora; do
      KRONLORA_DEVICE= "$node" bench/device-train.mjs --package "$package" --model "$work/models/$name" \
        --data "$work/models/$name.jsonl" --task "$task" --adapter $adapter --device $kron_device \
        --batch "$batch" --max-length "$length" --steps $steps --warmup $warmup | tail -n1 | tee -a "$results"
    done
    for adapter in lora lokr; do
      "$python" bench/device_train.py peft --model "$work/models/$name" --data "$work/models/$name.jsonl" \
        --task "$peft_task" --adapter $adapter --device "$device" --batch "$batch" --max-length "$length" \
        --steps $steps --warmup $warmup | tail -n1 | tee -a "$results"
    done
  done
  "$node" -e '
const rows = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean).map(JSON.parse);
console.log("\n| system | adapter | task | device | trainable | ex/s | tokens/s | peak MiB |\n|---|---|---|---|---|---|---|---|");
for (const r of rows) console.log(`| ${r.system} | ${r.adapter} | ${r.task} | ${r.device} | ${r.trainable} | ${r.examplesPerSecond.toFixed(2)} | ${r.tokensPerSecond.toFixed(0)} | ${r.peakMemoryMiB.toFixed(0)} |`);
const get = (s, a, t) => rows.find((r) => r.system.startsWith(s) && r.adapter === a && r.task === t);
for (const t of ["classification", "causal-lm"]) {
  const k = get("kronlora", "kron-lora", t), l = get("kronlora", "lora", t), pl = get("pytorch", "lora", t), pk = get("pytorch", "lokr", t);
  if (!k || !l) continue;
  console.log(`${t}: Kron-LoRA / LoRA step time ${(l.examplesPerSecond / k.examplesPerSecond).toFixed(3)}` +
    (pl ? `; kronlora LoRA / PEFT LoRA throughput ${(l.examplesPerSecond / pl.examplesPerSecond).toFixed(2)}` : "") +
    (pk ? `; Kron-LoRA / PEFT LoKr ${(k.examplesPerSecond / pk.examplesPerSecond).toFixed(2)}` : "") +
    (pl && pk ? `; PEFT LoKr / LoRA step time ${(pl.examplesPerSecond / pk.examplesPerSecond).toFixed(3)}` : ""));
}' "$results" | tee "$out/device-check.md"
  echo "device-check: done in $((SECONDS - start)) s; results in $out"
}

case ${1:-} in
  prepare) prepare ;;
  run) run "${2:-}" ;;
  *)
    echo "usage: bash scripts/device-check.sh prepare | run [--dry-run]" >&2
    exit 2
    ;;
esac
