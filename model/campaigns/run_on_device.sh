#!/usr/bin/env bash
# One call on a borrowed GPU machine that trains a campaign (model/campaign.py) and hands back its archives.
# That machine has PyTorch with CUDA but no network: the data set and the wheels it lacks travel with the
# working tree, in ignored folders named in the call's carry list:
#   .gpu_data/  the four Fashion-MNIST *-idx?-ubyte.gz files (cp /usr/share/datasets/fashion-mnist/*.gz)
#   .whl/       brevitas 0.13.4, dependencies 2.0.1, unfoldNd, setuptools<81 (pip download, Python 3.12)
# Usage there: bash model/campaigns/run_on_device.sh PLAN.json SECONDS   (archives land in $OUT)
set -uo pipefail
plan=${1:?plan}; seconds=${2:?seconds}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, brevitas, numpy; print(sys.version.split()[0], 'torch', torch.__version__, 'brevitas', brevitas.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
# A fresh directory per call: a machine kept warm between calls still holds the last campaign's files.
out=$(mktemp -d /tmp/campaign.XXXXXX)
python3 -m model.campaign --plan "$plan" --out "$out" --seconds "$seconds" --device cuda --data-dir .gpu_data
status=$?
cp "$out"/campaign-*.tar.gz "$out"/campaign.json "${OUT:-/tmp}/" 2>/dev/null
tar czf "${OUT:-/tmp}/calibration-logs.tar.gz" --exclude="*.pt" -C "$out" calibration 2>/dev/null
exit $status
