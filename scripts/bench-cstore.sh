#!/usr/bin/env bash
# C-STORE ingest throughput, tamiz beside Orthanc, from the same dcmtk storescu
# commands (benches/cstore.rs). Installs Orthanc (Debian `orthanc`) without starting its
# service: Orthanc listens on every interface, so the bench runs it only inside a
# private network namespace, which needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
if [[ ! -x /usr/sbin/Orthanc ]]; then
  echo "installing orthanc (Debian), its service not started" >&2
  # policy-rc.d forbids the package scripts from starting the service.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q orthanc >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
cargo bench --bench cstore "$@"
