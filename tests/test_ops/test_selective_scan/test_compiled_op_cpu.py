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


def _triton_version():
    if importlib.util.find_spec('triton') is None:
        return None
    import triton
    return tuple(int(part) for part in triton.__version__.split('.')[:2])


@pytest.mark.skipif(_triton_version() is None,
                    reason='triton is not installed (it comes with the Linux builds of torch)')
@pytest.mark.skipif((_triton_version() or (99, 0)) < (3, 7),
                    reason="Triton < 3.7's interpreter stops in these kernels (TypeError: only 0-dimensional arrays "
                           'can be converted to Python scalars, seen with 3.6 on the GPU machine); there the '
                           'compiled kernels are tested by test_gpu_backends.py')
def test_custom_ops_through_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    result = subprocess.run([sys.executable, os.path.join(HERE, 'interpreted_ops.py')], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.count('ok ') == 7, result.stdout
