"""keep_mask (ToP-ViM's hidden-state alignment) and its compact form gap_steps, against the float64 oracle."""
import os
import subprocess
import sys

import pytest
import torch

from mmssm.ops.selective_scan import METHODS, selective_scan, selective_scan_bidirectional, selective_scan_naive

from .helpers import assert_all_close, float64_copies, make_inputs, outputs_and_grads
from .test_compiled_op_cpu import needs_interpreter


def random_mask(batch, length, keep=0.6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, length, generator=generator) < keep


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('length', [37, 70])
def test_masked_scan_matches_oracle_forward_and_every_gradient(method, length):
    inputs = make_inputs(3, 4, length, 3, groups=2, dtype=torch.float32, seed=length)
    mask = random_mask(3, length, seed=length)
    reverse = length == 70
    out = outputs_and_grads(selective_scan, inputs, discretization=method, keep_mask=mask, backend='torch',
                            reverse=reverse, chunk_size=16)
    ref = outputs_and_grads(selective_scan_naive, float64_copies(inputs), discretization=method, keep_mask=mask,
                            reverse=reverse)
    assert set(out) >= {'du', 'ddelta', 'dA', 'dB', 'dC', 'dD', 'dz', 'ddelta_bias'}
    assert_all_close(f'{method} L={length}', ref, out, 2e-5)
    assert (out['y'][~mask.unsqueeze(1).expand_as(out['y'])] == 0).all()


def test_oracle_pruned_step_only_decays():
    """The definition, by hand: at a pruned step h_t = exp(delta_t A) h_{t-1}; at a kept one the usual step."""
    inputs = {k: v.detach() for k, v in make_inputs(2, 3, 9, 4, seed=3, grad=False).items()}
    mask = random_mask(2, 9, seed=5)
    mask[:, 0] = True
    y, last = selective_scan_naive(**inputs, keep_mask=mask, return_last_state=True)
    delta = torch.nn.functional.softplus(inputs['delta'] + inputs['delta_bias'][:, None])
    h = torch.zeros(2, 3, 4, dtype=torch.float64)
    for t in range(9):
        h = torch.exp(delta[:, :, t, None] * inputs['A']) * h + (
            mask[:, t, None, None] * delta[:, :, t, None] * inputs['B'][:, None, :, t] * inputs['u'][:, :, t, None])
        y_t = ((h * inputs['C'][:, None, :, t]).sum(-1) + inputs['D'] * inputs['u'][:, :, t]) \
            * torch.nn.functional.silu(inputs['z'][:, :, t])
        torch.testing.assert_close(y[:, :, t], y_t * mask[:, t, None], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('method', ['zoh', 'rk4'])
def test_all_true_mask_is_bit_equal_to_dense(method):
    inputs = make_inputs(3, 4, 37, 3, dtype=torch.float32, seed=1)
    dense = outputs_and_grads(selective_scan, inputs, discretization=method, backend='torch')
    masked = outputs_and_grads(selective_scan, inputs, discretization=method, backend='torch',
                               keep_mask=torch.ones(3, 37, dtype=torch.bool))
    for name in dense:
        assert torch.equal(dense[name], masked[name]), name


def test_everything_pruned_gives_zero_output_and_decayed_zero_state():
    inputs = make_inputs(3, 4, 37, 3, dtype=torch.float32, seed=2)
    mask = torch.zeros(3, 37, dtype=torch.bool)
    out = outputs_and_grads(selective_scan, inputs, keep_mask=mask, backend='torch')
    ref = outputs_and_grads(selective_scan_naive, float64_copies(inputs), keep_mask=mask)
    assert (out['y'] == 0).all() and (out['last state'] == 0).all()
    assert_all_close('all pruned', ref, out, 1e-6)


def test_bidirectional_uses_one_mask_for_both_directions():
    pairs = [make_inputs(3, 4, 37, 3, dtype=torch.float32, seed=s) for s in (7, 8)]
    mask = random_mask(3, 37, seed=9)
    names = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')
    y_f, y_b = selective_scan_bidirectional(**{k: (pairs[0][k], pairs[1][k]) for k in names}, z=pairs[0]['z'],
                                            keep_mask=mask, backend='torch')
    for direction, y in enumerate((y_f, y_b)):
        args = {k: pairs[direction][k].detach().double() for k in names}
        ref = selective_scan_naive(**args, z=pairs[0]['z'].detach().double(), keep_mask=mask,
                                   reverse=direction == 1)
        torch.testing.assert_close(y.double(), ref, rtol=0, atol=2e-5 * ref.abs().max().item())


def test_keep_mask_errors():
    inputs = make_inputs(2, 4, 10, 3, dtype=torch.float32, grad=False)
    with pytest.raises(ValueError, match=r'keep_mask must have shape \(batch, L\) = \(2, 10\)'):
        selective_scan(**inputs, keep_mask=torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match='keep_mask must be a bool tensor'):
        selective_scan(**inputs, keep_mask=torch.ones(2, 10))
    with pytest.raises(ValueError, match="gap_steps is defined for discretization='zoh' only"):
        selective_scan(**inputs, gap_steps=torch.ones(2, 10), discretization='foh')


@pytest.mark.parametrize('reverse', [False, True])
def test_gap_steps_equal_masked_full_length_scan(reverse):
    """The compact scan over the kept tokens with gap counts equals the full-length masked scan whose pruned
    positions carry the delta of the next kept token (in scan order), forward and every gradient."""
    batch, length = 3, 37
    mask = random_mask(batch, length, seed=11)
    mask[:, -1 if not reverse else 0] = True  # a last kept token (in scan order) absorbs every gap
    inputs = make_inputs(batch, 4, length, 3, dtype=torch.float64, seed=12)
    # per batch element: kept positions, gap counts, and the full-length delta copied from the next kept token
    full = {k: v.detach().clone() for k, v in inputs.items()}
    compact_results = []
    for b in range(batch):
        kept = mask[b].nonzero().squeeze(1)
        order = range(length) if not reverse else range(length - 1, -1, -1)
        gaps, source, pending = torch.zeros(length), torch.arange(length), []
        for t in order:
            if mask[b, t]:
                gaps[t] = len(pending)
                source[pending] = t
                pending = []
            else:
                pending.append(t)
        full['delta'][b] = inputs['delta'][b, :, source].detach()
        per_sample = {k: (v[b:b + 1] if v.dim() == 3 and v.shape[0] == batch else v) for k, v in inputs.items()}
        per_sample = {k: (v[..., kept] if k in ('u', 'delta', 'z', 'B', 'C') else v) for k, v in per_sample.items()}
        y = selective_scan(**per_sample, gap_steps=gaps[kept].double().unsqueeze(0), reverse=reverse,
                           backend='torch')
        compact_results.append((kept, y))
    y_full = selective_scan_naive(**full, keep_mask=mask, reverse=reverse)
    for b, (kept, y) in enumerate(compact_results):
        torch.testing.assert_close(y[0], y_full[b][:, kept], rtol=1e-10, atol=1e-10)
    # gradients: compact scan of element 0 against autograd of the oracle on the kept positions
    kept, y = compact_results[0]
    weight = torch.randn_like(y)
    grads = torch.autograd.grad((y * weight).sum(), [inputs['A'], inputs['D']])
    full64 = {k: v.detach().double().requires_grad_() for k, v in full.items()}
    y_ref = selective_scan_naive(**full64, keep_mask=mask, reverse=reverse)
    ref_grads = torch.autograd.grad((y_ref[0][:, kept] * weight[0]).sum(), [full64['A'], full64['D']])
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@needs_interpreter
def test_masked_triton_kernel_through_interpreter():
    """The Triton backend's forward and backward with keep_mask, on CPU through Triton's interpreter."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=os.path.dirname(root) + os.pathsep
               + os.environ.get('PYTHONPATH', ''))
    # a CPU tensor reaches the Triton kernels when the backend list says so (the interpreter runs them)
    code = (
        'import torch, mmssm.ops.selective_scan as ss\n'
        'ss.available_backends = lambda device: ["triton", "torch"]\n'
        f'import sys; sys.path.insert(0, {here!r})\n'
        'from helpers import make_inputs, outputs_and_grads, float64_copies, assert_all_close\n'
        'for method in ("zoh", "bilinear"):\n'
        '    inputs = make_inputs(1, 3, 40, 4, dtype=torch.float32, device="cpu", seed=4)\n'
        '    mask = torch.rand(1, 40, generator=torch.Generator().manual_seed(2)) < 0.6\n'
        '    out = outputs_and_grads(ss.selective_scan, inputs, discretization=method, keep_mask=mask,\n'
        '                            backend="triton", reverse=method == "zoh")\n'
        '    ref = outputs_and_grads(ss.selective_scan_naive, float64_copies(inputs), discretization=method,\n'
        '                            keep_mask=mask, reverse=method == "zoh")\n'
        '    assert_all_close(method, ref, out, 1e-4)\n'
        '    print("ok", method)\n')
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ['ok', 'zoh', 'ok', 'bilinear'], result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason='the Triton and CUDA backends need a CUDA GPU')
@pytest.mark.parametrize('backend', ['triton', 'cuda'])
def test_masked_scan_on_gpu_backends(backend):
    from mmssm.ops.selective_scan import available_backends
    if backend not in available_backends('cuda'):
        pytest.skip(f'{backend} backend not built here')
    inputs = make_inputs(3, 8, 197, 16, dtype=torch.float32, seed=5, device='cuda')
    mask = random_mask(3, 197, seed=6).cuda()
    for method in (('zoh', 'foh') if backend == 'triton' else ('zoh',)):
        out = outputs_and_grads(selective_scan, inputs, discretization=method, keep_mask=mask, backend=backend)
        ref = outputs_and_grads(selective_scan_naive, float64_copies(inputs), discretization=method,
                                keep_mask=mask)
        assert_all_close(f'{backend} {method}', ref, out, 1e-4)
    gaps = torch.randint(0, 3, (3, 197), device='cuda').float()
    compact = selective_scan(**inputs, gap_steps=gaps, backend=backend)
    reference = selective_scan(**inputs, gap_steps=gaps, backend='torch')
    torch.testing.assert_close(compact, reference, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # inference: the gaps in the Triton kernel
        torch.testing.assert_close(selective_scan(**inputs, gap_steps=gaps, backend=backend), reference,
                                   rtol=1e-4, atol=1e-4)


def test_auto_backend_takes_the_triton_kernel_for_gaps_in_inference(monkeypatch):
    """With gap_steps, 'auto' runs a direct inference call on Triton with the gaps in its kernel even where the
    CUDA extension comes first (no gap_form passes); with gradients, or MMSSM_SCAN_BACKEND=cuda, gap_form's plain
    scan on the usual backend."""
    import mmssm.ops.selective_scan as ss
    from mmssm.ops.selective_scan import compiled
    calls = []

    def record(backend, u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, gap=None):
        calls.append((backend, softplus, None if gap is None else len(gap)))
        shape = (len(u),) + tuple(u[0].shape)
        return u[0].new_zeros(shape), u[0].new_zeros(shape[:3] + (A[0].shape[1],))

    monkeypatch.setattr(ss, 'available_backends', lambda device: ['cuda', 'triton', 'torch'])
    monkeypatch.setattr(ss, '_unsupported', lambda *args: None)
    monkeypatch.setattr(compiled, 'scan', record)
    monkeypatch.delenv('MMSSM_SCAN_BACKEND', raising=False)
    inputs = make_inputs(2, 4, 10, 3, dtype=torch.float32, grad=False)
    gaps = torch.ones(2, 10)
    with torch.no_grad():
        selective_scan(**inputs, gap_steps=gaps)
        pairs = {k: (v, v) for k, v in inputs.items() if k != 'z'}
        selective_scan_bidirectional(**pairs, z=inputs['z'], gap_steps=(gaps, gaps))
    assert calls == [('triton', True, 1), ('triton', True, 2)]
    calls.clear()
    selective_scan(**{k: v.clone().requires_grad_() for k, v in inputs.items()}, gap_steps=gaps)
    monkeypatch.setenv('MMSSM_SCAN_BACKEND', 'cuda')
    with torch.no_grad():
        selective_scan(**inputs, gap_steps=gaps)
    assert calls == [('cuda', False, None), ('cuda', False, None)]  # gap_form: its step is softplus'd already
    with torch.no_grad(), pytest.raises(ValueError, match=r'gap_steps must be a float tensor of shape'):
        monkeypatch.delenv('MMSSM_SCAN_BACKEND')
        selective_scan(**inputs, gap_steps=torch.ones(2, 9))
