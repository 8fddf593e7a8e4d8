#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for SECONDS (default 60), seeded from the
# hostile corpus (tests/common/corpus.rs) and the committed crash regressions.
#   scripts/fuzz.sh            # 60 s per target (what CI runs)
#   scripts/fuzz.sh 1800       # longer, by hand
# Prints each target's executions and crashes; exits non-zero on a crash, leaving
# the input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)" >&2
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# Seeds first, with the environment of `make test` so that its build is reused.
rm -rf fuzz/seeds
FUZZ_SEEDS="$PWD/fuzz/seeds" cargo test --quiet --test hostile_corpus write_fuzz_seeds -- --ignored >/dev/null

# cargo-fuzz passes nightly-only flags; this machine has one stable toolchain, which
# accepts them when told it is bootstrapping (set only here: cargo rebuilds whatever
# it built without it). No sanitizer: the code under test is safe Rust (and C SQLite,
# which is not what is fuzzed), and a panic, abort or OOM is the failure.
export RUSTC_BOOTSTRAP=1

status=0
for target in ingest_file stow_multipart; do
  mkdir -p "fuzz/corpus/$target"
  seeds=("fuzz/seeds/$target")
  [[ -d "fuzz/regressions/$target" ]] && seeds+=("fuzz/regressions/$target")
  log="fuzz/$target.log"
  echo "== fuzz $target for ${secs}s" >&2
  if ! cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" "${seeds[@]}" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=262144 -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1; then
    status=1
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/:" >&2
    grep -E "panicked|ERROR|SUMMARY|artifact" "$log" | head -20 >&2 || true
  fi
  execs=$(grep -E "^stat::number_of_executed_units" "$log" | awk '{print $2}' | tail -1 || true)
  crashes=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
  echo "fuzz: $target: ${execs:-0} executions in ${secs}s, $crashes crash file(s)" >&2
done
exit $status
