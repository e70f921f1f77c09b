"""The fused Triton kernels against float64 torch references: on CPU through Triton's interpreter (so CI, which has
no GPU, checks them), and compiled on a GPU (the gpu marker)."""
import os
import subprocess
import sys

import pytest
import torch

from .test_selective_scan.test_compiled_op_cpu import needs_interpreter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _check(part, device):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if device == 'cpu':
        env['TRITON_INTERPRET'] = '1'
    result = subprocess.run([sys.executable, os.path.join(HERE, 'fused_checks.py'), part, device], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result.stdout


@needs_interpreter
def test_add_norm_through_the_triton_interpreter():
    """Residual add + RMSNorm / LayerNorm: with and without residual, weight, bias, float32 residual; float32 and
    bf16; output, new residual and every gradient."""
    stdout = _check('add_norm', 'cpu')
    assert stdout.count('ok ') == 2, stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (compiled Triton kernels)')
def test_add_norm_compiled():
    stdout = _check('add_norm', 'cuda')
    assert stdout.count('ok ') == 2, stdout


@needs_interpreter
def test_hybrid_block_fused_add_norm_through_the_triton_interpreter():
    """MambaVision's hybrid block with the fused add + LayerNorm equals the unfused one (output, gradients)."""
    assert _check('hybrid_block', 'cpu').count('ok ') == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (compiled Triton kernels)')
def test_hybrid_block_fused_add_norm_compiled():
    assert _check('hybrid_block', 'cuda').count('ok ') == 1
