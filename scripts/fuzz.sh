#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for SECONDS (default 60), seeded from the
# hostile corpus (tests/common/corpus.rs) and the committed crash regressions.
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 1800       # longer, by hand
#   scripts/fuzz.sh build      # only build the targets (CI builds them beside the tests)
# Prints each target's executions and crashes; exits non-zero on a crash, leaving
# the input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
build_only=false
[[ $secs == build ]] && build_only=true
# The fuzz targets are built the way cargo-fuzz builds them (libFuzzer's coverage
# instrumentation, `--cfg fuzzing`, release) but by cargo itself: installing cargo-fuzz
# would compile a second tool on every clean CI machine for no other gain.
# `--target` keeps the instrumentation off build scripts and proc macros.
target_triple=$(rustc -vV | sed -n 's/^host: //p')

# No sanitizer: the code under test is safe Rust (and C SQLite, which is not what is
# fuzzed), and a panic, abort or OOM is the failure.
echo "== fuzz: building the targets (instrumented, release)" >&2
RUSTFLAGS="-Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  -Cllvm-args=-sanitizer-coverage-stack-depth \
  --cfg fuzzing" \
  env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
  cargo build --quiet --manifest-path fuzz/Cargo.toml --release --target "$target_triple" --bins
bin_dir="fuzz/target/$target_triple/release"
$build_only && exit 0

# Seeds, with the environment of `make test` so that its build is reused.
rm -rf fuzz/seeds
FUZZ_SEEDS="$PWD/fuzz/seeds" cargo test --quiet --test hostile_corpus write_fuzz_seeds -- --ignored >/dev/null

# Both targets at once, one per core: CI waits for the longest, not the sum.
fuzz_target() { # target
  local target=$1
  mkdir -p "fuzz/corpus/$target"
  local seeds=("fuzz/seeds/$target")
  [[ -d "fuzz/regressions/$target" ]] && seeds+=("fuzz/regressions/$target")
  local log="fuzz/$target.log"
  echo "== fuzz $target for ${secs}s" >&2
  mkdir -p "fuzz/artifacts/$target"
  "$bin_dir/$target" -artifact_prefix="fuzz/artifacts/$target/" \
    "fuzz/corpus/$target" "${seeds[@]}" \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=262144 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1
}
targets=(ingest_file stow_multipart)
pids=()
for target in "${targets[@]}"; do
  fuzz_target "$target" &
  pids+=($!)
done
status=0
for i in "${!targets[@]}"; do
  target=${targets[$i]}
  log="fuzz/$target.log"
  if ! wait "${pids[$i]}"; then
    status=1
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/:" >&2
    grep -E "panicked|ERROR|SUMMARY|artifact" "$log" | head -20 >&2 || true
  fi
  execs=$(grep -E "^stat::number_of_executed_units" "$log" | awk '{print $2}' | tail -1 || true)
  crashes=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
  echo "fuzz: $target: ${execs:-0} executions in ${secs}s, $crashes crash file(s)" >&2
done
exit $status
