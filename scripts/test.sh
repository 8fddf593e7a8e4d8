#!/usr/bin/env bash
# The README's test command (`make test`). Installs what the tests need, starts a
# private PostgreSQL cluster and an S3-compatible server (s3s-fs), runs the whole
# suite on the embedded stack (SQLite + directory; the catalog and object-store tests
# run on every backend), then the integration tests that start a server again with
# the server on PostgreSQL + S3, and stops the services at the end.
# Extra arguments go to both `cargo test` runs (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
start_postgres
start_s3
echo "== tests: embedded stack (SQLite + directory); catalog and store tests on every backend"
cargo test "$@"
# The second pass runs the integration tests that start a server (the others test
# every backend in the first pass already: the catalog and store tests, or need no
# server: evaluate, demo), except the tests of pixel and view semantics, whose path
# through storage and catalog is the one pipeline.rs and stow.rs run on this stack.
EMBEDDED_ONLY=" renderings input_checks view_selection orientation "
scaled=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  grep -q 'TestServer::start' "$f" || continue
  [[ $EMBEDDED_ONLY == *" $name "* ]] && continue
  scaled+=(--test "$name")
done
echo "== tests: the server's integration tests again on PostgreSQL + S3 ($((${#scaled[@]} / 2)) files)"
TAMIZ_TEST_STACK=scaled cargo test "${scaled[@]}" "$@"
