#!/usr/bin/env bash
# `npm run fuzz [-- SECONDS]`: the property-based fuzz targets of every parser kronlora reads
# untrusted input with (crates/kronlora-core/tests/integration/fuzz/), each for an equal share
# of SECONDS (default 600, or KRONLORA_FUZZ_TOTAL_SECONDS), with a random seed that is printed
# so that a failure can be replayed. Every property is asserted, including those `npm test`
# leaves to open issues (KRONLORA_FUZZ_ALL=0 asserts only what `npm test` does;
# KRONLORA_FUZZ_ASSERT=NoInternal,Consistent asserts exactly those, to look past other findings).
# Each target stops at its first failure.
# Shrunk failures are printed and persisted by proptest in proptest-regressions/ files next to
# the targets; commit those of real findings. Logs: target/fuzz/<seed>/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

total=${1:-${KRONLORA_FUZZ_TOTAL_SECONDS:-600}}
seed=${PROPTEST_RNG_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
all=${KRONLORA_FUZZ_ALL:-1}
# module::test, in the order they run.
targets=(safetensors::safetensors_bert safetensors::safetensors_llama gguf::gguf_llama adapter::adapter_dir
         records::records checkpoint::checkpoint chat_template::chat_template options::options)
# KRONLORA_FUZZ_TARGETS="gguf::gguf_llama records::records" runs only those.
if [ -n "${KRONLORA_FUZZ_TARGETS:-}" ]; then read -r -a targets <<<"$KRONLORA_FUZZ_TARGETS"; fi
per=$(( total / ${#targets[@]} ))
(( per >= 1 )) || per=1
host=$(rustc -vV | sed -n 's/^host: //p')
cargo_test=(cargo test --release --target "$host" -p kronlora-core -p kronlora-node --test integration)
logs="target/fuzz/$seed"
mkdir -p "$logs"

echo "fuzz: building the integration tests"
# Built once, then run directly: a source edited during the run must not rebuild inside a
# target's time limit.
bin=$("${cargo_test[@]}" --no-run 2>&1 | tee /dev/stderr | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
[ -x "$bin" ] || { echo "fuzz: cannot find the integration test binary" >&2; exit 1; }
echo "fuzz: ${#targets[@]} targets, ${per} s each, seed $seed, KRONLORA_FUZZ_ALL=$all"
failed=0
summary=()
for t in "${targets[@]}"; do
  name=${t##*::}
  log="$logs/$name.log"
  echo "fuzz: $name (log: $log)"
  # The harness stops starting cases after $per s; `timeout` also bounds shrinking and hangs.
  rc=0
  PROPTEST_CASES=100000000 KRONLORA_FUZZ_SECONDS=$per PROPTEST_RNG_SEED=$seed KRONLORA_FUZZ_ALL=$all \
    timeout --kill-after=10 $(( per + 300 )) bash -c 'cd crates/kronlora-core && exec "$0" "$@"' "$PWD/$bin" --exact "fuzz::$t" --nocapture >"$log" 2>&1 || rc=$?
  line=$(grep -h '^fuzz-summary' "$log" | tail -1 || true)
  if [ -z "$line" ]; then
    line="fuzz-summary target=$name result=FAIL (exit $rc before a summary: killed, aborted or timed out; see $log)"
  fi
  summary+=("$line")
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "fuzz: $name FAILED; the shrunk input and how to replay it:"
    sed -n "/fuzz target $name:/,/^replay:/p" "$log" | head -60
  fi
  grep -h '^fuzz-known' "$log" || true
done
echo
echo "fuzz: summary (seed $seed, ${per} s per target; cases include shrinking)"
printf '  %s\n' "${summary[@]}"
exit $failed
