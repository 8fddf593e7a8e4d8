#!/usr/bin/env bash
# Decode time per 3328 x 4096 image for each codec, tamiz beside dcmtk, GDCM and
# pydicom's fastest plugin, on one core (benches/decode.rs). Adds pydicom's other
# decoding plugins (pylibjpeg-libjpeg, python-gdcm; PyPI) to the test venv.
# TAMIZ_BENCH_BITS=12 for 12 stored bits (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.cache/venv/bin/python -c 'import libjpeg, gdcm' 2>/dev/null \
  || .cache/venv/bin/pip install --quiet --disable-pip-version-check "pylibjpeg-libjpeg==2.5.0" "python-gdcm==3.2.6"
cargo bench --bench decode "$@"
