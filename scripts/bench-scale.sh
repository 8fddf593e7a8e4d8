#!/usr/bin/env bash
# Starts the private PostgreSQL and S3 server (as the tests do) and runs the
# scale-out benches: studies per minute with 1, 2 and 4 `tamiz worker` processes and
# an API node's memory as the bucket grows (benches/scale.rs), then lease-next and
# claim-next latency with 1,000,000 studies in the catalog (benches/claim_latency.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# shellcheck source=scripts/services.sh
source scripts/services.sh
trap stop_services EXIT
start_postgres
start_s3
cargo bench --bench scale --bench claim_latency "$@"
