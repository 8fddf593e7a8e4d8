#!/usr/bin/env bash
# Retrains the shipped triage model from scratch (not part of `make demo` or `make test`,
# which use the committed models/triage.onnx). About 15-20 minutes on 2 cores.
#   1. a synthetic training set, preprocessed by tamiz's own code   (tamiz dataset)
#   2. training + ONNX export + operating points                    (models/train.py)
#   3. a held-out synthetic set, evaluated through the pipeline     (tamiz synth, tamiz evaluate)
# Then copy the operating points (models/train-report.json) and the evaluation into
# models/triage.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${STUDIES:-500}
bash models/setup-venv.sh
cargo build --quiet
./target/debug/tamiz dataset --out models/data/train --studies "$STUDIES" --seed 11
models/.venv/bin/python models/train.py --data models/data/train --epochs 12 \
  --out models/triage.onnx --report models/train-report.json
./target/debug/tamiz synth --out models/data/heldout --studies 200 --seed 999 --cancer-fraction 0.5
./target/debug/tamiz evaluate models/data/heldout --card models/triage.toml
