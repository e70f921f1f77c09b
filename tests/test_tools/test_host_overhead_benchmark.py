"""benchmarks/host_overhead.py: its stubs replace kernels that exist, and it times a Vim inference pass and a
training step with every Triton launch stubbed (the host side alone)."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_ops', 'test_selective_scan'))
from test_compiled_op_cpu import needs_interpreter  # noqa: E402


@needs_interpreter
def test_host_time_of_inference_and_training():
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    for flags, what in (([], 'forward'), (['--train'], 'training step')):
        result = subprocess.run([sys.executable, 'benchmarks/host_overhead.py', '--arch', 'tiny', '--passes', '2',
                                 '--rounds', '1', *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        match = re.search(rf'Vim-tiny host time per {what}: min ([0-9.]+) ms', result.stdout)
        assert match and float(match.group(1)) > 0, result.stdout


def test_the_stubbed_kernels_exist():
    """Every Triton kernel of the three kernel modules is stubbed: a renamed one would be left running (through the
    interpreter) instead."""
    pytest.importorskip('triton')
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    import host_overhead

    import mmssm.ops.causal_conv1d as conv
    import mmssm.ops.fused_add_norm as add_norm
    from mmssm.ops.selective_scan import triton_scan
    originals = {(module, name): getattr(module, name) for module in (conv, add_norm, triton_scan)
                 for name in dir(module) if name.startswith('_') and name.endswith('_kernel')}
    assert len(originals) == 8, sorted(name for _, name in originals)
    try:
        host_overhead.stub_kernels()
        left = [name for (module, name) in originals if not isinstance(getattr(module, name), host_overhead._NoLaunch)]
        assert not left, left
    finally:
        for (module, name), kernel in originals.items():
            setattr(module, name, kernel)
