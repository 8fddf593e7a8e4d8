#!/usr/bin/env bash
# Retrains the shipped triage model from scratch (not part of `make demo` or `make test`,
# which use the committed models/triage.onnx). About 25 minutes on 2 cores, plus the
# held-out evaluation (~10 minutes, ~15 GB of temporary files).
#   1. a synthetic training set, preprocessed by tamiz's own code   (tamiz dataset)
#   2. training + ONNX export + operating points                    (models/train.py)
#   3. a held-out synthetic set, evaluated through the pipeline     (tamiz synth, tamiz evaluate)
# Then copy the operating points (models/train-report.json) and the evaluation into
# models/triage.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${STUDIES:-500}
bash models/setup-venv.sh
# The binary as the test build makes it (`--all-targets`: the same dependency features,
# so nothing is compiled twice).
cargo build --quiet --all-targets
# Every For Presentation vendor convention in turn (src/synth.rs Variant), rendered
# canonically as the card says.
./target/debug/tamiz dataset --out models/data/train --studies "$STUDIES" --seed 11 --variants
models/.venv/bin/python models/train.py --data models/data/train --epochs 24 \
  --out models/triage.onnx --report models/train-report.json
# Held out: other breasts (seed 999), each in every convention, For Processing included
# (~15 GB on disk for 50 studies x 11 conventions; removed after).
rm -rf models/data/heldout
./target/debug/tamiz synth --out models/data/heldout --studies "${HELDOUT:-50}" --seed 999 \
  --cancer-fraction 0.5 --variants
./target/debug/tamiz evaluate models/data/heldout --card models/triage.toml --by variant
rm -rf models/data/heldout
