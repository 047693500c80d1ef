#!/usr/bin/env bash
# 20 AlexNet nodes on one GPU (run.device = "cuda"): per-node GPU memory, images/s, networked ==
# in-process on the GPU, and agreement with a CPU run to float tolerance. Under 5 minutes on a
# machine with a GPU; prints "no GPU" and exits 0 where there is none.
#
#   bash benchmarks/gpu_check.sh                 # defaults: 20 nodes, 10 rounds
#   bash benchmarks/gpu_check.sh --nodes 8 --out runs/gpu-check
#
# Uses the `python3` on PATH (set PYTHON=... to choose another) with mcepl installed; needs a
# CUDA build of PyTorch (scripts/install.sh with MCEPL_TORCH=torch).
set -euo pipefail
PY="${PYTHON:-python3}"
here="$(cd "$(dirname "$0")" && pwd)"
if ! "$PY" - <<'PYEOF' 2>/dev/null
import sys
import torch
sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 1)
PYEOF
then
  echo "no GPU"
  exit 0
fi
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
exec timeout 900 "$PY" "$here/gpu_check.py" "$@"
