"""The Triton scan kernels' register layout, checked on their PTX for sm_90 compiled on this (CPU) machine: the
sums over the states run inside each thread (no warp shuffles for them), as the kernels' tiles intend."""
import pytest

triton = pytest.importorskip('triton')

from mmssm.ops.kernel_ir import scan_kernel_counts  # noqa: E402


@pytest.mark.parametrize('block_d', [64, 32])
@pytest.mark.parametrize('save', [False, True])
def test_forward_sums_over_states_in_thread(block_d, save):
    counts = scan_kernel_counts('fwd', block_d, 1, SAVE=save)
    assert counts['shuffles'] == 0, counts
    if not save:  # (saving checkpoints may stage through shared memory; the step loop must not)
        assert counts['barriers'] == 0, counts
    assert counts['exp2'] >= 16 * block_d // 32, counts  # the states' exps are all there


def test_backward_shuffles_only_for_the_sums_over_channels():
    """32 channels on one warp: dB and dC, the two sums over the channels, take 16 states x 5 butterfly steps
    each; the three sums over the states (output, step gradient, input gradient) take none."""
    counts = scan_kernel_counts('bwd', 32, 1)
    assert 0 < counts['shuffles'] <= 2 * 16 * 5, counts
