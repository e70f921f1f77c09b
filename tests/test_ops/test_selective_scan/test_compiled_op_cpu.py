"""The custom ops of the GPU backends (compiled.py) on a CPU machine: the Triton kernels run through Triton's
interpreter (TRITON_INTERPRET=1, read when the kernels are defined, hence a subprocess), so that the autograd
plumbing, the fake implementations and the optional inputs are checked by CI, which has no GPU. The kernels'
speed and their compiled code are the GPU tests' (test_gpu_backends.py)."""
import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))


@pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                    reason='triton is not installed (it comes with the Linux builds of torch)')
def test_custom_ops_through_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    result = subprocess.run([sys.executable, os.path.join(HERE, 'interpreted_ops.py')], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.count('ok ') == 3, result.stdout
