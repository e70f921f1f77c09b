#!/usr/bin/env bash
# Create (or update) the virtual environment that the tests and the demo run in, with everything mmssm needs.
# Safe to re-run: pip skips what is installed, and mmcv's built wheel is reused from pip's cache.
#   MMSSM_VENV   where the environment goes (default: .venv in the repository)
#   PYTHON       the interpreter that creates it (default: python3; 3.10 to 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MMSSM_VENV:-.venv}
PYTHON=${PYTHON:-python3}
step() { printf '\n[mmssm install] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }

# torch 2.13.0 from the package registry with its matching torchvision. '===' is an exact string match: it
# keeps pip from taking a local '2.13.0+cpu' build that some machines keep in a find-links folder, which
# '==2.13.0' would accept and prefer, and which no torchvision on the registry can run with.
step "torch and torchvision"
pip install "torch===2.13.0" "torchvision==0.28.0"

# mmcv 2.1.x has no prebuilt wheel for this torch, so it is built from source with its ops (about 7 minutes on
# 2 cores the first time; pip caches the wheel, so later installs on this machine take seconds). Its setup.py
# needs torch importable (--no-build-isolation) and setuptools < 70 (it relies on APIs removed in 70).
step "mmcv 2.1.0 with ops (built from source unless pip's cache has the wheel)"
pip install "setuptools<70" wheel ninja
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} pip install --no-build-isolation "mmcv==2.1.0"
# torch declares setuptools>=77 for its extension builder; put a recent one back now that mmcv is built
# (< 81 keeps pkg_resources, which mmengine's package utilities still import).
pip install "setuptools>=77,<81"

step "task packages, test tools and mmssm (editable)"
pip install -r requirements/runtime.txt -r requirements/tests.txt
pip install --no-build-isolation -e .

"$VENV/bin/python" -c "import mmssm, torch, mmcv, mmdet, mmseg, mmpretrain; \
print(f'[mmssm install] ready: mmssm {mmssm.__version__}, torch {torch.__version__}, mmcv {mmcv.__version__}, \
mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}')"
