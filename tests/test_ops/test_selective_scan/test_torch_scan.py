"""The torch path against the float64 oracle: every method, forward, last state and every gradient."""
import pytest
import torch

from mmssm.ops.selective_scan import METHODS, selective_scan, selective_scan_naive, torch_scan

from .helpers import assert_all_close, assert_close, float64_copies, make_inputs, outputs_and_grads

GRAD_NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def compare_with_naive(method, inputs, reverse=False, chunk_size=None, atol=1e-10, rtol=1e-9):
    torch.manual_seed(1)
    y, h = selective_scan(**inputs, discretization=method, reverse=reverse, return_last_state=True,
                          chunk_size=chunk_size)
    y_ref, h_ref = selective_scan_naive(**inputs, discretization=method, reverse=reverse, return_last_state=True)
    assert_close('y', y_ref, y, atol, rtol)
    assert_close('last state', h_ref, h, atol, rtol)
    weight_y, weight_h = torch.randn_like(y), torch.randn_like(h)
    tensors = [inputs[name] for name in GRAD_NAMES]
    grads = torch.autograd.grad((y * weight_y).sum() + (h * weight_h).sum(), tensors)
    grads_ref = torch.autograd.grad((y_ref * weight_y).sum() + (h_ref * weight_h).sum(), tensors)
    for name, grad, grad_ref in zip(GRAD_NAMES, grads, grads_ref):
        assert_close(f'd{name}', grad_ref, grad, atol, rtol)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('length, state, groups, chunk_size', [
    (1, 16, None, None), (2, 1, None, 1), (63, 16, 2, 7), (197, 16, None, 50), (197, 1, 4, None)])
def test_matches_naive(method, length, state, groups, chunk_size):
    inputs = make_inputs(2, 4, length, state, groups=groups, seed=length)
    compare_with_naive(method, inputs, chunk_size=chunk_size)


@pytest.mark.parametrize('method', METHODS)
def test_matches_naive_long_and_reversed(method):
    inputs = make_inputs(1, 2, 1025, 16, groups=2, seed=3)
    compare_with_naive(method, inputs, reverse=True, chunk_size=100)


@pytest.mark.parametrize('method', METHODS)
def test_reverse_is_the_flipped_scan(method):
    inputs = make_inputs(2, 3, 20, 4, grad=False)
    flipped = {k: (v.flip(-1) if k in ('u', 'delta', 'z', 'B', 'C') else v) for k, v in inputs.items()}
    y_reverse = selective_scan(**inputs, discretization=method, reverse=True)
    y_flipped = selective_scan(**flipped, discretization=method)
    assert_close('reverse', y_flipped.flip(-1), y_reverse, atol=1e-12)


@pytest.mark.parametrize('method', METHODS)
def test_gradcheck(method):
    inputs = make_inputs(1, 2, 6, 2, groups=2, seed=5)
    names = list(inputs)

    def function(*tensors):
        y, h = selective_scan(**dict(zip(names, tensors)), discretization=method, return_last_state=True,
                              chunk_size=4)
        return y, h

    assert torch.autograd.gradcheck(function, tuple(inputs[name] for name in names), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision(method, dtype):
    """The state is kept in float32: the result may be off by little more than its own rounding."""
    inputs = make_inputs(2, 8, 97, 16, dtype=dtype, seed=7, grad=False)
    y = selective_scan(**inputs, discretization=method)
    assert y.dtype == dtype
    y_ref = selective_scan_naive(**{k: v.double() for k, v in inputs.items()}, discretization=method)
    rounding = (y_ref.to(dtype).double() - y_ref).abs().max().item()
    # float32 state arithmetic over 97 steps adds ~1e-5 relative; the output rounding dominates for fp16/bf16.
    assert_close(f'{method} {dtype}', y_ref, y, atol=2 * rounding + 1e-5 * y_ref.abs().max().item())


def test_last_state_is_float32_for_low_precision_input():
    inputs = make_inputs(1, 2, 9, 4, dtype=torch.bfloat16, grad=False)
    _, h = selective_scan(**inputs, return_last_state=True)
    assert h.dtype == torch.float32


def test_optional_arguments_can_be_left_out():
    inputs = make_inputs(2, 4, 11, 3, grad=False)
    for name in ('D', 'z', 'delta_bias'):
        inputs[name] = None
    inputs['delta'] = inputs['delta'].abs() + 0.05  # used as the step itself
    for method in METHODS:
        y = selective_scan(**inputs, discretization=method, delta_softplus=False)
        y_ref = selective_scan_naive(**inputs, discretization=method, delta_softplus=False)
        assert_close(method, y_ref, y, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
@pytest.mark.parametrize('method', ['zoh', 'poly'])
def test_autocast_does_not_lower_the_precision(method, device):
    """Under bfloat16 autocast, float32 inputs still get float32 math, forward and backward (backward run inside
    the autocast region too): a bfloat16 C h matmul would be off by ~2e-3 instead of ~1e-7."""
    inputs = make_inputs(2, 4, 63, 16, groups=2, dtype=torch.float32, device=device, seed=21)
    reference = outputs_and_grads(selective_scan_naive, float64_copies(inputs), discretization=method)
    with torch.autocast(device, dtype=torch.bfloat16):
        results = outputs_and_grads(selective_scan, inputs, discretization=method, chunk_size=16, backend='torch')
    assert_all_close(f'{method} under autocast', reference, results, relative=1e-5)


def test_chunk_length_keeps_saved_states_sqrt_length():
    # small batch * dim * N: the cache-sized chunk
    assert torch_scan.chunk_length(2, 4, 16, length=100) == torch_scan.CHUNK_ELEMENTS // 128
    # large: at least sqrt(L) steps (and MIN_CHUNK), not 1
    assert torch_scan.chunk_length(64, 768, 16, length=197) == 15
    assert torch_scan.chunk_length(64, 768, 16, length=10) == torch_scan.MIN_CHUNK
    assert torch_scan.chunk_length(64, 768, 16, chunk_size=3, length=197) == 3


def test_large_batch_saves_o_sqrt_length_states():
    """batch * dim * N = CHUNK_ELEMENTS, where a cache-sized chunk would be one step: what autograd keeps for the
    backward must still be far below one (batch, dim, N) state per step."""
    batch, dim, length, state = 4, 256, 100, 256
    inputs = make_inputs(batch, dim, length, state, dtype=torch.float32, device='cpu', seed=2)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        y = selective_scan(**inputs, backend='torch')
    all_states = length * batch * dim * state
    # 10 chunk-start states, the inputs and a few (batch, dim, L) intermediates: ~0.14 of all_states
    assert sum(saved) < all_states / 4, f'saved {sum(saved)} elements, all states {all_states}'
    y.sum().backward()
    assert torch.isfinite(inputs['A'].grad).all()


@pytest.mark.gpu
@pytest.mark.parametrize('method', METHODS)
def test_cuda_tensors_match_the_cpu_oracle(method):
    """The torch path runs unchanged on CUDA tensors (float32 there, float64 oracle on the CPU)."""
    inputs = make_inputs(2, 8, 197, 16, groups=2, dtype=torch.float32, device='cuda', seed=11)
    y, h = selective_scan(**inputs, discretization=method, return_last_state=True)
    assert y.is_cuda and h.is_cuda
    y.backward(torch.ones_like(y))
    cpu_inputs = {k: v.detach().cpu().double().requires_grad_() for k, v in inputs.items()}
    y_ref, h_ref = selective_scan_naive(**cpu_inputs, discretization=method, return_last_state=True)
    y_ref.backward(torch.ones_like(y_ref))
    scale = y_ref.abs().max().item()
    assert_close('y', y_ref, y.cpu(), atol=1e-4 * scale)
    assert_close('last state', h_ref, h.cpu(), atol=1e-4 * h_ref.abs().max().item())
    for name, tensor in inputs.items():
        ref = cpu_inputs[name].grad
        assert_close(f'd{name}', ref, tensor.grad.cpu(), atol=1e-4 * ref.abs().max().item())
