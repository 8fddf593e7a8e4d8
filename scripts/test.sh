#!/usr/bin/env bash
# The README's test command (`make test`). Installs what the tests need, starts a
# private PostgreSQL cluster and an S3-compatible server (s3s-fs), runs the whole
# suite on the embedded stack (SQLite + directory; the catalog and object-store tests
# run on every backend), then every integration test again with the server on
# PostgreSQL + S3, and stops the services at the end.
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
echo "== tests: the integration suite again, the server on PostgreSQL + S3"
TAMIZ_TEST_STACK=scaled cargo test --test '*' "$@"
