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


def _skip_reason():
    version = _triton_version()
    if version is None:
        return 'triton is not installed (it comes with the Linux builds of torch)'
    if version < (3, 7):
        return ("Triton < 3.7's interpreter stops in these kernels (TypeError: only 0-dimensional arrays can be "
                'converted to Python scalars, seen with 3.6 on the GPU machine); there the compiled kernels are '
                'tested by test_gpu_backends.py')
    return None


needs_interpreter = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or '')


def _interpret(part):
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    result = subprocess.run([sys.executable, os.path.join(HERE, 'interpreted_ops.py'), part], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    return result.stdout


@needs_interpreter
def test_custom_ops_through_the_triton_interpreter():
    """opcheck of the ops (schema, fake implementations, autograd registration), and softplus of delta far below
    0 (~1e-13 at -30) and in its series' range, forward and every gradient (through the eager autograd.Function
    and through the op's own autograd); the merged output layout of two directions; the kernels' softplus and
    sigmoid over [-120, 120], and a 16-state scan with gradients (the forward's other softplus)."""
    stdout = _interpret('plumbing')
    assert stdout.count('ok ') == 7, stdout  # opcheck also of channels-last inputs


@needs_interpreter
def test_gaps_in_the_triton_kernel_through_the_interpreter():
    """Token pruning's gap_steps in the Triton forward (inference) against the float64 torch gap scan; gap_form
    with gradients (interpreted_ops.check_gaps)."""
    stdout = _interpret('gaps')
    assert stdout.count('ok ') == 3, stdout


@needs_interpreter
@pytest.mark.slow
def test_every_method_through_the_triton_interpreter():
    """Every method at L = 70, past two of the backward's 32-step checkpoint chunks: forward, last state and every
    gradient against the float64 loop, with and without D, z, delta_bias, softplus, groups and reverse."""
    stdout = _interpret('methods')
    assert stdout.count('ok ') == 6, stdout


@needs_interpreter
def test_strided_layouts_through_the_triton_interpreter():
    """The kernels on a Vim block's activations as its matmuls lay them out, no copies: u, delta channels-last,
    B and C slices of the x_proj output, z a slice of the in_proj output shared by both directions; forward, last
    states (channels-last outputs) and every gradient of both directions in one launch against the float64 loop,
    zoh and bilinear (its earlier sample read through the strides); zoh also with the backward's dB / dC atomics."""
    stdout = _interpret('layouts')
    assert stdout.count('ok ') == 3, stdout


@pytest.mark.slow  # (about 95 s: in test-slow, keeping make test under 15 minutes on 2 cores)
@needs_interpreter
def test_chunk_parallel_forward_through_the_triton_interpreter():
    """The chunk-parallel forward (32-step chunks at L = 70, the last one partial) and the segment-parallel backward
    (same segments) from the checkpoints it writes: zoh with and without options, and highorder, whose earlier
    samples cross the boundaries (what a segment gives to the steps before it is added after the kernel); both
    directions on strided inputs, one reversed, bilinear; forward, last state and every gradient against the
    float64 loop."""
    stdout = _interpret('chunked')
    assert stdout.count('ok ') == 4, stdout


@needs_interpreter
@pytest.mark.slow
def test_every_method_through_the_segment_parallel_backward():
    """Every method in 32-step segments at L = 70, and both strided directions with dB / dC added atomically."""
    stdout = _interpret('segments')
    assert stdout.count('ok ') == 7, stdout


@pytest.mark.skipif(_triton_version() is None, reason='triton is not installed')
@pytest.mark.parametrize('rule, block, programs, minimum, forced', [
    ('forward_chunk_length', 'FWD_BLOCK_D', 'FWD_PROGRAMS', 'FWD_MIN_CHUNK', 'FWD_CHUNK_L'),
    ('backward_segment_length', 'BWD_BLOCK_D', 'BWD_PROGRAMS', 'BWD_MIN_SEGMENT', 'BWD_SEGMENT_L')])
def test_split_length_policy(monkeypatch, rule, block, programs, minimum, forced):
    """The forward's chunks and the backward's segments."""
    from mmssm.ops.selective_scan import triton_scan as ts
    split = getattr(ts, rule)
    # enough sequences (Vim-T at batch 128), or too short to split: one piece
    assert split(128, 384, 2, 197) == 197
    assert split(128, 384, 2, 4096) == 4096
    assert split(1, 64, 1, 200) == 200
    # few sequences, long: pieces of a multiple of CHECKPOINT_L, at least the minimum, enough for the programs
    for batch, dim, dirs, length in ((2, 384, 2, 16384), (8, 384, 2, 4096), (4, 384, 2, 1025), (1, 64, 1, 1000)):
        piece = split(batch, dim, dirs, length)
        assert piece < length and piece % ts.CHECKPOINT_L == 0 and piece >= getattr(ts, minimum)
        sequences = batch * dim * dirs // getattr(ts, block)
        pieces = -(-length // piece)
        assert sequences * pieces >= getattr(ts, programs) or pieces >= length // getattr(ts, minimum) - 1
    monkeypatch.setattr(ts, forced, 48)
    with pytest.raises(ValueError, match=f'{forced} must be a positive multiple of 32'):
        split(2, 384, 2, 16384)
    monkeypatch.setattr(ts, forced, 64)
    assert split(2, 384, 2, 40) == 40 and split(2, 384, 2, 16384) == 64


@pytest.mark.parametrize('rule, channels, forced', [('forward_segment_length', 512, 'FWD_SEGMENT_L'),
                                                    ('backward_segment_length', 256, 'BWD_SEGMENT_L')])
def test_cuda_segment_length_policy(monkeypatch, rule, channels, forced):
    """The CUDA kernels' segments (pure Python: no extension needed)."""
    from mmssm.ops.selective_scan import cuda_scan as cs
    split = getattr(cs, rule)
    # enough blocks (Vim-T at batch 128), or too short to split: the whole sequence
    assert split(128, 384, 2, 197, 16) == 197
    assert split(128, 384, 1, 197, 16) == 197
    assert split(1, 64, 1, 200, 16) == 200
    # few blocks, long: whole chunks, at least the minimum, enough for the blocks
    for batch, dim, dirs, length, state in ((2, 384, 2, 16384, 16), (8, 384, 1, 4096, 16), (2, 384, 1, 16384, 16),
                                            (4, 384, 2, 1025, 16), (1, 64, 1, 1000, 32), (1, 64, 1, 5000, 4)):
        segment = split(batch, dim, dirs, length, state)
        assert segment < length and segment % cs.CHUNK == 0 and segment >= cs.MIN_SEGMENT
        block = channels // (8 if state <= 8 else 16 if state <= 16 else 32)
        blocks = batch * dim * dirs // block
        segments = -(-length // segment)
        assert blocks * segments >= cs.SEGMENT_BLOCKS or segment < 2 * cs.MIN_SEGMENT
    monkeypatch.setattr(cs, forced, 48)
    with pytest.raises(ValueError, match=f'cuda_scan.{forced} must be a positive multiple of 32, got 48'):
        split(2, 384, 2, 16384, 16)
    monkeypatch.setattr(cs, forced, 64)
    assert split(2, 384, 2, 40, 16) == 40 and split(2, 384, 2, 16384, 16) == 64
    monkeypatch.setattr(cs, forced, 1 << 30)  # off: the whole sequence
    assert split(2, 384, 2, 16384, 16) == 16384
