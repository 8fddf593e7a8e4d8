#!/usr/bin/env bash
# Starts the private PostgreSQL and S3 server (as the tests do) and runs the
# scale-out bench: studies per minute with 1, 2 and 4 `tamiz worker` processes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
start_postgres
start_s3
cargo bench --bench scale "$@"
