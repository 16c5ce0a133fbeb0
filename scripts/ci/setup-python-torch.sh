#!/usr/bin/env bash
# A Python with torch 2.13.0 (CPU) and numpy, for the Python<->Node DDP interoperability test
# (test/e2e/dist-interop.test.ts) and the fixture scripts, and with onnx and onnxruntime for the ONNX
# export test (test/parity/onnx.test.ts: onnx.checker and onnxruntime read what residual exports): a venv
# under .cache/python-torch, installed with pip from the configured (local) wheels. Prints the python
# path on its last line.
#   bash scripts/ci/setup-python-torch.sh      then   RESIDUAL_TEST_PYTHON=$(...) npm test
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${RESIDUAL_PYTHON_VENV:-$root/.cache/python-torch}"
py="$venv/bin/python"
if [ -x "$py" ] && "$py" -c 'import torch, numpy, onnx, onnxruntime; assert torch.__version__.startswith("2.13.0")' 2>/dev/null; then
  echo "$py"
  exit 0
fi
python3 -m venv "$venv"
"$py" -m pip install --retries 0 --timeout 5 -q 'torch==2.13.0+cpu' numpy onnx onnxruntime >&2 \
  || "$py" -m pip install --retries 0 --timeout 5 -q 'torch==2.13.0' numpy onnx onnxruntime >&2
"$py" -c 'import sys, torch, numpy, onnx, onnxruntime; print("torch", torch.__version__, "onnx", onnx.__version__, "onnxruntime", onnxruntime.__version__, file=sys.stderr)'
echo "$py"
