#!/usr/bin/env bash
# One call on a lent GPU machine: every GPU test and benchmark (zoo bench gpu), results in $OUT.
#
#   bash leaderboard/gpu_check.sh OUT_DIR [--quick]
#
# Such a machine has torch and triton but cannot install this package (no network, and a build
# requirement would pull another torch), so the import root `zoo` is assembled from the checkout
# with symbolic links, exactly as setup.py maps it: zoo/ + models/ -> zoo.models + kernels/ ->
# zoo.kernels + configs/ -> zoo.configs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?usage: gpu_check.sh OUT_DIR [--quick]}"; shift
site="$(mktemp -d)"
mkdir -p "$site/zoo"
for entry in "$root"/zoo/*; do ln -s "$entry" "$site/zoo/$(basename "$entry")"; done
ln -s "$root/models" "$site/zoo/models"
ln -s "$root/kernels" "$site/zoo/kernels"
ln -s "$root/configs" "$site/zoo/configs"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$site"  # so that the checkout's own zoo/ folder does not shadow the assembled package
exec python3 -m zoo.bench.gpu --out "$out" --checkout "$root" "$@"
