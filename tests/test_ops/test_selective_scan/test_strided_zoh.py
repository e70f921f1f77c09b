"""The CUDA extension's strided zoh kernels (csrc/selective_scan/zoh_strided.cuh), which take the Triton path's
whole-sequence zoh forward and backward when the extension is built: outputs, last states and every gradient
against the float64 loop and against the Triton kernels they replace, on a Vim block's strided layouts, awkward
lengths (within a chunk, at and past the 32-step checkpoint chunks), state counts below 16, one and two
directions, with and without gate, softplus and the last state's gradient; the inference call's options."""
import pytest
import torch

from mmssm.ops.selective_scan import cuda_scan, selective_scan_naive, triton_scan
from mmssm.ops.selective_scan.compiled import scan

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or cuda_scan.extension() is None
    or not hasattr(cuda_scan.extension(), 'zoh_bwd_strided'),
    reason='needs a CUDA device and the compiled kernels (' + cuda_scan.BUILD_HINT + ')')]

RANK = 3


def strided_inputs(*args, **kwargs):
    # (interpreted_ops picks its device at import: CUDA here, where these tests run)
    from .interpreted_ops import strided_inputs
    return strided_inputs(*args, **kwargs)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Names of the strided kernels called, in order (the kernels switched on)."""
    monkeypatch.setattr(triton_scan, 'FWD_CUDA_ZOH', True)
    monkeypatch.setattr(triton_scan, 'BWD_CUDA_ZOH', True)
    calls, ext = [], cuda_scan.extension()

    def counting(name):
        original = getattr(ext, name)

        def call(*args):
            calls.append(name[4:7])
            return original(*args)
        return call

    for name in ('zoh_fwd_strided', 'zoh_bwd_strided'):
        monkeypatch.setattr(ext, name, counting(name))
    return calls


def on_triton(monkeypatch):
    monkeypatch.setattr(triton_scan, 'FWD_CUDA_ZOH', False)
    monkeypatch.setattr(triton_scan, 'BWD_CUDA_ZOH', False)


def _names(leaves, directions, gate):
    """The leaves that the scan of ``directions`` reads."""
    return [k for k in sorted(leaves) if (k == 'xz' and gate) or (k != 'xz' and int(k[-1]) in directions)]


def _run(leaves, per_direction, z, directions, gate, softplus, last_weight, seed=1):
    """Outputs, last states and the gradients of every leaf through the Triton path's scan."""
    lists = [[per_direction[d][i] for d in directions] for i in range(7)]
    zs = [z] * len(directions) if gate else []
    out, last = scan('triton', *lists, zs, softplus, 'zoh', [d == 1 for d in directions])
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).cuda()
    loss = (out.double() * weight).sum() + last_weight * last.double().sum()
    names = _names(leaves, directions, gate)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names])
    results = dict(zip(names, grads), out=out.detach(), last=last.detach())
    return results, weight


def _reference(leaves, directions, gate, softplus, weight, last_weight, state):
    ref = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    dim = ref['xz'].shape[-1] // 2
    total, outs, lasts = 0, [], []
    for i, d in enumerate(directions):
        x_dbl = ref[f'x_dbl{d}']
        y, h = selective_scan_naive(
            ref[f'u{d}'].transpose(1, 2), ref[f'delta{d}'].transpose(1, 2), ref[f'A{d}'],
            x_dbl[..., RANK:RANK + state].transpose(1, 2), x_dbl[..., RANK + state:].transpose(1, 2),
            D=ref[f'D{d}'], z=ref['xz'][..., dim:].transpose(1, 2) if gate else None, delta_bias=ref[f'bias{d}'],
            delta_softplus=softplus, reverse=d == 1, return_last_state=True)
        total = total + (y * weight[i]).sum() + last_weight * h.sum()
        outs.append(y.detach())
        lasts.append(h.detach())
    names = _names(ref, directions, gate)
    results = dict(zip(names, torch.autograd.grad(total, [ref[k] for k in names])))
    return dict(results, out=torch.stack(outs), last=torch.stack(lasts))


def _compare(results, reference, triton=None):
    for name, ref in reference.items():
        scale = ref.abs().max().item()
        error = (results[name].double() - ref).abs().max().item()
        assert error <= 1e-4 * scale, f'{name}: {error:.3g} against the float64 loop (scale {scale:.3g})'
        if triton is not None:
            triton_error = (triton[name].double() - ref).abs().max().item()
            assert error <= 4 * triton_error + 1e-6 * scale, f'{name}: {error:.3g}, Triton {triton_error:.3g}'


@pytest.mark.parametrize('length', [1, 31, 32, 33, 70, 197])
@pytest.mark.parametrize('state', [16, 12])
def test_both_directions_match_the_float64_loop_and_the_triton_kernels(kernel_calls, monkeypatch, length, state):
    leaves, per_direction, z = strided_inputs(2, 64, length, state, rank=RANK, seed=length + state)
    results, weight = _run(leaves, per_direction, z, (0, 1), True, True, 1.0)
    assert kernel_calls == ['fwd', 'bwd'], 'the CUDA kernels did not take the scan'
    on_triton(monkeypatch)
    triton, _ = _run(leaves, per_direction, z, (0, 1), True, True, 1.0)
    assert kernel_calls == ['fwd', 'bwd']
    _compare(results, _reference(leaves, (0, 1), True, True, weight, 1.0, state), triton)


@pytest.mark.parametrize('length', [33, 197])
def test_the_strided_backward_after_the_triton_forward(kernel_calls, monkeypatch, length):
    """The default split: the Triton forward's checkpoints and last states read by the strided backward."""
    monkeypatch.setattr(triton_scan, 'FWD_CUDA_ZOH', False)
    leaves, per_direction, z = strided_inputs(2, 64, length, 16, rank=RANK, seed=length + 1)
    results, weight = _run(leaves, per_direction, z, (0, 1), True, True, 1.0)
    assert kernel_calls == ['bwd'], 'the forward should stay on Triton and the backward take the CUDA kernel'
    _compare(results, _reference(leaves, (0, 1), True, True, weight, 1.0, 16))


@pytest.mark.parametrize('direction', [0, 1])
def test_one_direction_without_gate_and_softplus_with_the_last_state(kernel_calls, direction):
    leaves, per_direction, z = strided_inputs(3, 96, 64, 16, rank=RANK, seed=5)
    with torch.no_grad():  # positive steps without softplus
        for d in (0, 1):
            leaves[f'delta{d}'].abs_().add_(0.05)
    results, weight = _run(leaves, per_direction, z, (direction,), False, False, 0.7)
    assert kernel_calls == ['fwd', 'bwd']
    _compare(results, _reference(leaves, (direction,), False, False, weight, 0.7, 16))


def test_bf16_vim_shape_matches_the_triton_kernels(kernel_calls, monkeypatch):
    _, per_direction, z = strided_inputs(4, 192, 197, 16, rank=12, seed=3, dtype=torch.bfloat16)
    inputs = [[per_direction[d][i].detach() for d in (0, 1)] for i in range(7)]
    zs = [z.detach()] * 2
    dout = [torch.randn(4, 197, 192, device='cuda', dtype=torch.bfloat16).transpose(1, 2) for _ in range(2)]

    def both():
        out, last, saved = triton_scan.forward(*inputs, zs, True, 'zoh', [False, True], True)
        grads = triton_scan.backward(dout, *inputs, zs, True, 'zoh', [False, True], saved, [])
        return (out, last) + grads

    ours = both()
    assert kernel_calls == ['fwd', 'bwd']
    on_triton(monkeypatch)
    theirs = both()
    names = ('out', 'last', 'du', 'ddelta', 'dA', 'dB', 'dC', 'dD', 'ddelta_bias', 'dz')
    for name, a, b in zip(names, ours, theirs):
        for d in (0, 1):
            error = (a[d].float() - b[d].float()).abs().max().item() / b[d].float().abs().max().item()
            assert error < 2e-2, f'{name}[{d}]: {error:.3g} relative to the Triton kernels'


def test_the_inference_call_with_a_log_and_the_merged_layout(kernel_calls, monkeypatch):
    _, per_direction, z = strided_inputs(2, 64, 75, 16, rank=RANK, seed=9, dtype=torch.bfloat16)
    inputs = [[per_direction[d][i].detach() for d in (0, 1)] for i in range(7)]
    inputs[2] = [torch.log(-a) for a in inputs[2]]  # A_log, as the model holds it
    args = (*inputs, [z.detach()] * 2, True, 'zoh', [False, True], False)
    ours = triton_scan.forward(*args, stacked=True, a_log=True, merged=True)
    assert kernel_calls == ['fwd']
    on_triton(monkeypatch)
    theirs = triton_scan.forward(*args, stacked=True, a_log=True, merged=True)
    assert ours[0].stride() == theirs[0].stride()
    for name, a, b in zip(('out', 'last'), ours, theirs):
        error = (a.float() - b.float()).abs().max().item() / b.float().abs().max().item()
        assert error < 1e-2, f'{name}: {error:.3g} relative to the Triton kernel'


def test_other_calls_stay_on_triton(kernel_calls):
    for state, dim in ((8, 64), (16, 48)):  # N <= 8; channels not a multiple of 32
        leaves, per_direction, z = strided_inputs(1, dim, 40, state, rank=RANK, seed=state)
        _run(leaves, per_direction, z, (0, 1), True, True, 1.0)
    leaves, per_direction, z = strided_inputs(1, 64, 40, 16, rank=RANK, seed=1)
    inputs = [[per_direction[d][i].detach() for d in (0, 1)] for i in range(7)]
    gap = [torch.zeros(1, 40, device='cuda')] * 2  # token pruning's gaps: Triton's forward only
    triton_scan.forward(*inputs, [z.detach()] * 2, True, 'zoh', [False, True], False, gap=gap)
    assert kernel_calls == []
