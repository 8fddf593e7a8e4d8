#!/usr/bin/env bash
# The README's test command (`make test`). Installs what the tests need, starts a
# private PostgreSQL cluster, runs the whole suite on the embedded stack (SQLite +
# directory; the catalog tests run on both databases), then every integration test
# again with the server on PostgreSQL, and stops the services at the end.
# Extra arguments go to both `cargo test` runs (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
start_postgres
echo "== tests: embedded stack (SQLite + directory), catalog tests on SQLite and PostgreSQL"
cargo test "$@"
echo "== tests: the integration suite again, the server on PostgreSQL"
TAMIZ_TEST_CATALOG=postgres cargo test --test '*' "$@"
