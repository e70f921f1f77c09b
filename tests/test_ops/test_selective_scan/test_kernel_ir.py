"""The Triton scan forward's register layout, checked on its PTX and SASS for sm_90 compiled on this (CPU) machine:
the sum over the states runs inside each thread (no warp shuffles), as the kernel's tile intends."""
import pytest

triton = pytest.importorskip('triton')

from mmssm.ops.kernel_ir import scan_kernel_counts, scan_kernel_sass  # noqa: E402


@pytest.mark.parametrize('block_d', [64, 32])
@pytest.mark.parametrize('save', [False, True])
def test_forward_sums_over_states_in_thread(block_d, save):
    counts = scan_kernel_counts('fwd', block_d, 1, SAVE=save)
    assert counts['shuffles'] == 0, counts
    if not save:  # (saving checkpoints may stage through shared memory; the step loop must not)
        assert counts['barriers'] == 0, counts
    assert counts['exp2'] >= 16 * block_d // 32, counts  # the states' exps are all there



def test_forward_step_loop_in_sass():
    """The forward's step loop (its largest loop), per iteration: one exp2 per state of each of the thread's
    channels (BLOCK_D 64 on one warp: 2 channels x 16 states, plus softplus / sigmoid), no shuffles, barriers or
    shared memory."""
    try:
        loops = scan_kernel_sass('fwd', 64, 1)
    except FileNotFoundError as error:
        pytest.skip(str(error))
    step = loops[-1]['opcodes']
    assert 32 <= step['MUFU'] <= 48, step
    # softplus by its series and sigmoid by an approximate reciprocal: 362 on Triton 3.7 (libdevice's log1p and
    # exact divisions took 458)
    assert loops[-1]['instructions'] <= 400, loops[-1]
    assert step['SHFL'] == step['BAR'] == step['LDS'] == step['STS'] == 0, step
