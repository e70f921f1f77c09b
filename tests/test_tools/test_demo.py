"""`make demo` runs tools/demo.py: the demo data, the Vim-bilinear UperNet demo config, evaluation and pictures.

The whole schedule runs here (about 4 minutes on the 2-core CPU), so that the test checks what the demo is for: the
model learns the demo classes. docs/benchmarks.md has the measured mIoU (92.4); the floor leaves room for the
rounding differences of other CPUs and torch builds, not for a model that learns the classes poorly."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MIOU_FLOOR = 88.0

pytest.importorskip('mmseg')


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore')
    result = subprocess.run(
        [sys.executable, 'tools/demo.py', '--work-dir', str(tmp_path / 'work'), '--data-root',
         str(tmp_path / 'data')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert osp.isfile(tmp_path / 'data' / 'ade' / 'ADEChallengeData2016' / 'annotations' / 'training' /
                      'ADE_train_00000001.png')
    miou = re.search(r'mIoU on the demo validation set: ([0-9.]+)', result.stdout)
    assert miou, output[-4000:]
    assert float(miou.group(1)) >= MIOU_FLOOR, f'demo mIoU {miou.group(1)} below {MIOU_FLOOR}:\n{output[-4000:]}'
    pictures = re.search(r'predictions next to ground truth: (\d+) pictures in (\S+)', result.stdout)
    assert pictures and int(pictures.group(1)) == 40 and osp.isdir(pictures.group(2))
