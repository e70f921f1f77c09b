#!/usr/bin/env bash
# The checks that need a GPU, run on the GPU machine from the repository root:
#   0. build the CUDA selective-scan extension (just-in-time, ~35 s on 16 cores), so that its tests run;
#   1. the selective-scan tests on CUDA tensors (MMSSM_TEST_DEVICE=cuda; the bad-input cases build CPU tensors
#      on purpose and stay on the CPU run) and the gpu-marked tests (operator and Vim);
#   2. the transformers >= 5 guard against the machine's real transformers (when OpenMMLab packages are on
#      PYTHONPATH, e.g. from the device kit, without its transformers-hiding entry).
set -uo pipefail
status=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
python3 -m mmssm.ops.selective_scan.cuda_scan --build --quiet || status=1
MMSSM_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider tests/test_ops -k "not bad_input_is_named" || status=1
python3 -m pytest -q -p no:cacheprovider -m gpu tests || status=1
if python3 -c "import mmpretrain" 2>/dev/null; then
  python3 - <<'PY' || status=1
import importlib.metadata as md
print('transformers', md.version('transformers'), 'mmpretrain', md.version('mmpretrain'))
import mmssm  # noqa: F401  (installs the guard)
import mmseg.models, mmdet.models, mmpretrain.models  # noqa: F401,E401
print('guard: mmseg.models, mmdet.models and mmpretrain.models imported with the real transformers')
PY
fi
exit $status
