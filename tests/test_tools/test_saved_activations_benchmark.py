"""benchmarks/saved_activations.py on a small input: the fused mixer core (the default), scan_recompute and with_cp
save less than autograd's unfused Vim, in that order."""
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_ops', 'test_selective_scan'))
from test_compiled_op_cpu import needs_interpreter  # noqa: E402


@needs_interpreter
def test_saved_activation_rows():
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    result = subprocess.run([sys.executable, 'benchmarks/saved_activations.py', '--size', '112', '--batch', '4'],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = {line.split('|')[1].strip(): float(line.split('|')[2]) for line in result.stdout.splitlines()
            if line.startswith('| ') and 'MiB' not in line}
    plain, fused, recompute, blocks = (rows['Vim, fused_training=False (tiny)'],
                                       rows['Vim (fused_training, the default) (tiny)'],
                                       rows['Vim, scan_recompute (tiny)'], rows['Vim, with_cp (whole blocks) (tiny)'])
    assert 0 < blocks < recompute < fused < 0.8 * plain and recompute < 0.6 * plain, rows
