#!/usr/bin/env bash
# Create models/.venv (git-ignored) with the pinned, CPU-only training stack
# from models/requirements.txt. Needs only PyPI. See the comment at the top of
# requirements.txt for why it is installed with --no-deps.
#
#   bash models/setup-venv.sh            # create or complete the venv
#   PYTHON=python3.11 bash models/setup-venv.sh
#   models/.venv/bin/python models/train.py --help
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi

# Fully pinned closed set; --no-deps so torch's CUDA requirements are not resolved.
"$venv/bin/python" -m pip install --disable-pip-version-check --no-deps \
    -r "$here/requirements.txt"

# Smoke test: torch must import and run a conv on CPU; onnx/onnxruntime must import.
"$venv/bin/python" - <<'PY'
import numpy, onnx, onnxruntime, torch
torch.set_num_threads(2)
y = torch.nn.functional.conv2d(torch.ones(1, 1, 8, 8), torch.ones(1, 1, 3, 3))
assert float(y[0, 0, 0, 0]) == 9.0
print(f"venv ok: torch {torch.__version__}, numpy {numpy.__version__}, "
      f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")
PY
