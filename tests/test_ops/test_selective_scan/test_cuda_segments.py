"""The CUDA kernels' segment-parallel path (cuda_scan.FWD_SEGMENT_L / BWD_SEGMENT_L, forced short here) against the
float64 oracle and against the whole-sequence path: every method, awkward lengths (a last segment that is not a
whole number of chunks), both directions in one launch (the second reversed), grouped B / C, optional inputs
present and absent, the last state and its adjoint."""
import pytest
import torch

from mmssm.ops.selective_scan import METHODS, cuda_scan

from .test_cuda_scan import NAMES, OPTIONAL_INPUTS, check, oracle, run_cuda, scan_inputs, scan_options

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or not cuda_scan.is_available(),
    reason='needs a CUDA device and the compiled kernels (' + cuda_scan.BUILD_HINT + ')')]

WHOLE = 1 << 30  # a forced length >= L: one segment
GRAD_NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias', 'z')  # cuda_scan.backward's order


def run_with(segment, directions, method, reverse, weights, softplus=True):
    saved = cuda_scan.FWD_SEGMENT_L, cuda_scan.BWD_SEGMENT_L
    cuda_scan.FWD_SEGMENT_L = cuda_scan.BWD_SEGMENT_L = segment
    try:
        return run_cuda(directions, method, softplus, reverse, weights)
    finally:
        cuda_scan.FWD_SEGMENT_L, cuda_scan.BWD_SEGMENT_L = saved


def compare_segments(method, length, dtype, segment=64, batch=2, dim=16, state=16, groups=2, softplus=True, seed=0,
                     **options):
    """Both directions (the second reversed) in segments of ``segment`` steps: the oracle and the one-segment run."""
    inputs = [scan_inputs(batch, dim, length, state, groups, dtype, seed + i, **options) for i in range(2)]
    generator = torch.Generator().manual_seed(seed + 7)
    weights = [(torch.randn(batch, dim, length, generator=generator, dtype=torch.float64).cuda().to(dtype),
                torch.randn(batch, dim, state, generator=generator, dtype=torch.float64).cuda()) for _ in range(2)]
    kernels = [kernel for kernel, _ in inputs]
    reverse = [False, True]
    out, last, grads = run_with(segment, kernels, method, reverse, weights, softplus)
    out1, last1, grads1 = run_with(WHOLE, kernels, method, reverse, weights, softplus)
    for direction, (_, ref_inputs) in enumerate(inputs):
        tag = f'direction {direction}'
        y_ref, h_ref, grads_ref = oracle(ref_inputs, method, reverse[direction], softplus, *weights[direction])
        check(f'{tag} y', y_ref, out[direction], dtype)
        check(f'{tag} last state', h_ref, last[direction], dtype)
        check(f'{tag} y (whole sequence)', out1[direction].double(), out[direction], dtype)
        check(f'{tag} last state (whole sequence)', last1[direction].double(), last[direction], dtype)
        ours = dict(zip(GRAD_NAMES, (g[direction] if g else None for g in grads)))
        whole = dict(zip(GRAD_NAMES, (g[direction] if g else None for g in grads1)))
        for name, grad_ref in grads_ref.items():
            check(f'{tag} d{name}', grad_ref, ours[name], dtype)
            check(f'{tag} d{name} (whole sequence)', whole[name].double(), ours[name], dtype)
        for name in ('D', 'z', 'delta_bias'):
            if inputs[direction][0][name] is None:
                assert ours[name] is None, f'd{name} should be None without {name}'


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('length', [197, 300, 1025])
def test_methods_fp32(method, length):
    compare_segments(method, length, torch.float32, seed=length)


@pytest.mark.parametrize('method', METHODS)
def test_methods_bf16(method):
    compare_segments(method, 300, torch.bfloat16, seed=3)


@pytest.mark.parametrize('method', ['zoh', 'poly', 'rk4'])
def test_one_chunk_segments(method):
    """32-step segments: every chunk a segment; the samples before a segment lie in the one before it."""
    compare_segments(method, 70, torch.float32, segment=32, seed=4)


@pytest.mark.parametrize('options', OPTIONAL_INPUTS)
@pytest.mark.parametrize('method', ['zoh', 'highorder'])
def test_optional_inputs(method, options):
    softplus, options = scan_options(options)
    compare_segments(method, 200, torch.float32, softplus=softplus, seed=5, **options)


@pytest.mark.parametrize('state, groups', [(5, None), (32, 4)])
@pytest.mark.parametrize('method', ['foh', 'bilinear'])
def test_state_sizes_and_groups(method, state, groups):
    compare_segments(method, 250, torch.float32, dim=40, state=state, groups=groups, seed=state)


def test_default_policy_splits_long_sequences():
    """Unforced: a long sequence of few channels runs in segments and matches the whole-sequence path."""
    batch, dim, length, state = 1, 32, 2049, 16
    assert cuda_scan.forward_segment_length(batch, dim, 1, length, state) < length
    assert cuda_scan.backward_segment_length(batch, dim, 1, length, state) < length
    kernel, _ = scan_inputs(batch, dim, length, state, None, torch.bfloat16, 9)
    weights = [(torch.randn(batch, dim, length, device='cuda').to(torch.bfloat16),
                torch.randn(batch, dim, state, device='cuda'))]
    out, last, grads = run_cuda([kernel], 'highorder', True, [True], weights)
    out1, last1, grads1 = run_with(WHOLE, [kernel], 'highorder', [True], weights)
    check('y', out1[0].double(), out[0], torch.bfloat16)
    check('last state', last1[0].double(), last[0], torch.bfloat16)
    for name, grad, grad1 in zip(GRAD_NAMES, grads, grads1):
        check(f'd{name}', grad1[0].double(), grad[0], torch.bfloat16)


def test_backward_without_saved_states():
    """The backward reruns the forward (in segments too) when it gets no saved states."""
    kernel, _ = scan_inputs(2, 8, 300, 16, None, torch.float32, 4)
    lists = {name: [kernel[name]] for name in NAMES}
    args = (lists['u'], lists['delta'], lists['A'], lists['B'], lists['C'], lists['D'], lists['delta_bias'],
            lists['z'], True, 'poly', [False])
    saved_lengths = cuda_scan.FWD_SEGMENT_L, cuda_scan.BWD_SEGMENT_L
    cuda_scan.FWD_SEGMENT_L = cuda_scan.BWD_SEGMENT_L = 64
    try:
        out, last, saved = cuda_scan.forward(*args, True)
        assert saved[0].shape == cuda_scan.saved_shape(2, 8, 300, 16, True)
        dout = [torch.randn_like(out[0])]
        with_saved = cuda_scan.backward(dout, *args, saved, [])
        without = cuda_scan.backward(dout, *args, [], [])
    finally:
        cuda_scan.FWD_SEGMENT_L, cuda_scan.BWD_SEGMENT_L = saved_lengths
    for a, b in zip(with_saved, without):
        torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
