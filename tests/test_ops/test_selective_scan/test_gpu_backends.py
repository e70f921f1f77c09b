"""The GPU backends (Triton, and the CUDA extension when built) against the torch path and the float64 loop.

Every method and dtype, forward and every gradient (u, delta, A, B, C, D, delta_bias, z and the final state's),
at L = 1, 63, 197, 2048, 2049, 4097 and 16384, with the allocator's free memory filled with NaN before each
backend run (an output element that a kernel forgets to write stays NaN). A backend's error against the float64
loop may be at most about twice the torch path's error in the same precision (see ``_check``).

Run on a GPU machine: ``pytest -m gpu tests/test_ops/test_selective_scan/test_gpu_backends.py``.
"""
import pytest
import torch

from mmssm.ops.selective_scan import (
    METHODS,
    available_backends,
    selective_scan,
    selective_scan_bidirectional,
    selective_scan_naive,
)

from .helpers import assert_all_close, float64_copies, make_inputs, outputs_and_grads

pytestmark = pytest.mark.gpu

LENGTHS = (1, 63, 197, 2048, 2049, 4097, 16384)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias', 'z')
# Below this fraction of the largest reference value, a difference is rounding noise in any implementation
# (float32 sums over thousands of steps), whatever the torch path's own error happened to be.
FLOOR = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def _cuda_available():
    return torch.cuda.is_available()


def _backend_params():
    params = [pytest.param('triton', id='triton')]
    if _cuda_available() and 'cuda' in available_backends('cuda'):
        params.append(pytest.param('cuda', id='cuda'))
    else:
        params.append(pytest.param('cuda', id='cuda', marks=pytest.mark.skip(
            reason='the CUDA extension is not built (python -m mmssm.ops.selective_scan.cuda_scan --build)')))
    return params


def poison_allocator():
    """Fill the caching allocator's free blocks (both pools) with NaN bytes, so that outputs allocated next
    start as NaN."""
    blocks = [torch.empty(256 * 1024, dtype=torch.uint8, device='cuda') for _ in range(64)]
    blocks.append(torch.empty(1 << 29, dtype=torch.uint8, device='cuda'))
    for block in blocks:
        block.fill_(0xFF)
    del blocks


def _shape(length):
    # long sequences with fewer channels, so that the float64 loop stays quick
    return (2, 8, length, 16) if length <= 2049 else (1, 4, length, 16)


_REFERENCES = {}
_TORCH_RESULTS = {}


def _inputs(method, length):
    batch, dim, length, state = _shape(length)
    return make_inputs(batch, dim, length, state, groups=2, dtype=torch.float64, device='cuda',
                       seed=length + 7 * METHODS.index(method), grad=False)


def _weights(reference):
    generator = torch.Generator(device='cuda').manual_seed(3)
    return [torch.randn(r.shape, generator=generator, device='cuda', dtype=torch.float64) for r in reference]


def _run(inputs, method, dtype, backend):
    """Outputs (y, last state) and every gradient, as float64, for inputs cast to dtype (A, D and delta_bias
    stay float32, as the parameters of a model)."""
    if dtype == torch.float64:
        cast = dict(inputs)
    else:
        cast = {name: t.float() if name in ('A', 'D', 'delta_bias') else t.to(dtype) for name, t in inputs.items()}
    leaves = {name: t.detach().requires_grad_() for name, t in cast.items()}
    if backend == 'naive':
        y, h = selective_scan_naive(**leaves, discretization=method, return_last_state=True)
    else:
        y, h = selective_scan(**leaves, discretization=method, return_last_state=True, backend=backend)
    return y, h, leaves


def _results(inputs, method, dtype, backend, weights=None):
    y, h, leaves = _run(inputs, method, dtype, backend)
    if weights is None:
        weights = _weights((y, h))
    loss = (y.double() * weights[0]).sum() + (h.double() * weights[1]).sum()
    grads = torch.autograd.grad(loss, [leaves[name] for name in NAMES])
    return [y.double(), h.double()] + [g.double() for g in grads], weights


def _reference(method, length):
    key = (method, length)
    if key not in _REFERENCES:
        inputs = _inputs(method, length)
        results, weights = _results(inputs, method, torch.float64, 'naive')
        _REFERENCES[key] = (inputs, results, weights)
    return _REFERENCES[key]


def _torch_results(method, length, dtype):
    key = (method, length, dtype)
    if key not in _TORCH_RESULTS:
        inputs, _, weights = _reference(method, length)
        _TORCH_RESULTS[key] = _results(inputs, method, dtype, 'torch', weights)[0]
    return _TORCH_RESULTS[key]


def _check(label, reference, torch_result, result, dtype):
    names = ['y', 'last state'] + [f'd{name}' for name in NAMES]
    failures = []
    for name, ref, base, out in zip(names, reference, torch_result, result):
        if not torch.isfinite(out).all():
            failures.append(f'{name}: non-finite values (an output element not written?)')
            continue
        scale = ref.abs().max().item()
        error = (out - ref).abs().max().item()
        torch_error = (base - ref).abs().max().item()
        allowed = max(2.0 * torch_error, FLOOR[dtype] * scale)
        if error > allowed:
            failures.append(f'{name}: error {error:.3e} > allowed {allowed:.3e} (torch path {torch_error:.3e}, '
                            f'scale {scale:.3e})')
    assert not failures, f'{label}: ' + '; '.join(failures)


@pytest.mark.parametrize('length', LENGTHS)
@pytest.mark.parametrize('dtype', DTYPES, ids=lambda d: str(d).replace('torch.', ''))
@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('backend', _backend_params())
def test_backend_matches_torch_path_and_float64_loop(backend, method, dtype, length):
    inputs, reference, weights = _reference(method, length)
    torch_result = _torch_results(method, length, dtype)
    poison_allocator()
    result, _ = _results(inputs, method, dtype, backend, weights)
    _check(f'{backend} {method} {dtype} L={length}', reference, torch_result, result, dtype)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('backend', _backend_params())
def test_bidirectional_launch_equals_two_scans(backend, method):
    forward, backward = (make_inputs(2, 8, 197, 16, groups=2, dtype=torch.bfloat16, device='cuda', seed=s)
                         for s in (1, 2))
    for inputs in (forward, backward):
        for name in ('A', 'D', 'delta_bias'):
            inputs[name] = inputs[name].detach().float().requires_grad_()
    z = forward['z']
    pairs = {name: (forward[name], backward[name]) for name in NAMES[:-1]}
    poison_allocator()
    y_f, y_b = selective_scan_bidirectional(**pairs, z=z, discretization=method, backend=backend)
    (y_f.float().sum() + 2 * y_b.float().sum()).backward()
    together = {name: (forward[name].grad.clone(), backward[name].grad.clone()) for name in NAMES[:-1]}
    together_z = z.grad.clone()
    for inputs in (forward, backward):
        for tensor in inputs.values():
            tensor.grad = None
    s_f = selective_scan(**{k: forward[k] for k in NAMES[:-1]}, z=z, discretization=method, backend=backend)
    s_b = selective_scan(**{k: backward[k] for k in NAMES[:-1]}, z=z, discretization=method, backend=backend,
                         reverse=True)
    (s_f.float().sum() + 2 * s_b.float().sum()).backward()
    torch.testing.assert_close(y_f, s_f, rtol=0, atol=0)
    torch.testing.assert_close(y_b, s_b, rtol=0, atol=0)
    # gradients summed over channels (dA, dB, dC, ...) may add in another order (one bf16 rounding step apart)
    for name in NAMES[:-1]:
        for together_grad, single in ((together[name][0], forward[name].grad),
                                      (together[name][1], backward[name].grad)):
            scale = single.abs().max().item()
            torch.testing.assert_close(together_grad, single, rtol=1.6e-2, atol=1e-2 * scale)
    torch.testing.assert_close(together_z, z.grad, rtol=1.6e-2, atol=1e-2 * z.grad.abs().max().item())


@pytest.mark.parametrize('backend', _backend_params())
def test_options_left_out_and_odd_state_count(backend):
    """No D, z or delta_bias, no softplus, B/C without groups, and (on Triton) N not a power of two."""
    state = 5 if backend == 'triton' else 8
    inputs = make_inputs(2, 6, 150, state, dtype=torch.float32, device='cuda', seed=4, grad=False)
    for name in ('D', 'z', 'delta_bias'):
        inputs[name] = None
    inputs['delta'] = inputs['delta'].abs() + 0.05
    for method in METHODS:
        leaves = {k: v.requires_grad_() if v is not None else None for k, v in inputs.items()}
        y = selective_scan(**leaves, discretization=method, delta_softplus=False, backend=backend)
        grads = torch.autograd.grad(y.sum(), [leaves[k] for k in ('u', 'delta', 'A', 'B', 'C')])
        ref_leaves = {k: v.detach().double().requires_grad_() if v is not None else None for k, v in inputs.items()}
        y_ref = selective_scan_naive(**ref_leaves, discretization=method, delta_softplus=False)
        ref_grads = torch.autograd.grad(y_ref.sum(), [ref_leaves[k] for k in ('u', 'delta', 'A', 'B', 'C')])
        torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
        for grad, ref in zip(grads, ref_grads):
            torch.testing.assert_close(grad.double(), ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


def test_mixed_precision_B_C_on_triton():
    """bf16 u with float32 B and C (allowed by the API) on the Triton backend, against the torch path."""
    inputs = make_inputs(2, 8, 197, 16, dtype=torch.float32, device='cuda', seed=5, grad=False)
    for name in ('u', 'delta', 'z'):
        inputs[name] = inputs[name].bfloat16()
    y = selective_scan(**inputs, discretization='highorder', backend='triton')
    y_ref = selective_scan(**inputs, discretization='highorder', backend='torch')
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)


def test_auto_picks_a_compiled_backend_on_gpu():
    inputs = make_inputs(2, 4, 10, 3, dtype=torch.bfloat16, device='cuda', grad=False)
    backends = available_backends('cuda')
    assert backends[0] in ('cuda', 'triton') and backends[-1] == 'torch'
    from mmssm.ops.selective_scan import _resolve_backend
    assert _resolve_backend('auto', inputs['u'], inputs['B'], inputs['A']) == backends[0]
    double = make_inputs(2, 4, 10, 3, dtype=torch.float64, device='cuda', grad=False)
    assert _resolve_backend('auto', double['u'], double['B'], double['A']) == 'torch'
    with pytest.raises(ValueError, match=r"backend='triton' cannot run this call: float64 inputs run on the "
                                         r'torch backend only'):
        selective_scan(**double, backend='triton')


@pytest.mark.parametrize('scan_backend', ['auto', 'triton'])
def test_torch_compile_fullgraph_through_a_vim_block(scan_backend):
    """A bidirectional Mamba mixer (Vim's block) compiles with fullgraph=True through the custom ops, and gives
    the eager result, forward and backward; 'triton' is the channels-last path (conv and scan custom ops)."""
    from mmssm.models.layers import MambaMixer
    torch.manual_seed(0)
    mixer = MambaMixer(64, d_state=16, bidirectional=True, discretization='foh', scan_backend=scan_backend).cuda()
    x = torch.randn(2, 197, 64, device='cuda', requires_grad=True)
    eager = mixer(x)
    grads = torch.autograd.grad(eager.sum(), [x] + list(mixer.parameters()))
    compiled = torch.compile(mixer, fullgraph=True)
    out = compiled(x)
    compiled_grads = torch.autograd.grad(out.sum(), [x] + list(mixer.parameters()))
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    for grad, ref in zip(compiled_grads, grads):
        torch.testing.assert_close(grad, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('backend', _backend_params())
def test_softplus_of_very_negative_delta(backend):
    """delta + delta_bias around -30, where softplus is ~1e-13: y, the last state and every gradient keep their
    size (log(1 + exp(x)) in float32 would make the steps 0 and all of them 0)."""
    inputs = make_inputs(2, 8, 197, 16, groups=2, dtype=torch.float32, device='cuda', seed=9)
    inputs['delta'] = (inputs['delta'].detach() - 30.0).requires_grad_()
    inputs['D'] = inputs['z'] = None
    reference = outputs_and_grads(selective_scan_naive, float64_copies(inputs), discretization='zoh')
    results = outputs_and_grads(selective_scan, inputs, discretization='zoh', backend=backend)
    assert_all_close(f'{backend} softplus tail', reference, results, relative=1e-4)


@pytest.mark.parametrize('gate', ['both', 'forward_only'])
@pytest.mark.parametrize('backend', _backend_params())
def test_bidirectional_with_options_in_one_direction_only(backend, gate):
    """D in the forward direction only and delta_bias in the backward one (zeros in one launch); a gate in one
    direction only runs two launches. Against the float64 loop of each direction."""
    directions = [make_inputs(2, 8, 197, 16, groups=2, dtype=torch.float32, device='cuda', seed=s) for s in (3, 4)]
    directions[0]['delta_bias'] = None
    directions[1]['D'] = None
    if gate == 'forward_only':
        directions[1]['z'] = None
    pairs = {name: (directions[0][name], directions[1][name]) for name in NAMES}
    outputs = selective_scan_bidirectional(**pairs, discretization='poly', backend=backend)
    leaves = [[t for t in d.values() if t is not None] for d in directions]
    grads = torch.autograd.grad(outputs[0].sum() + 2 * outputs[1].sum(), leaves[0] + leaves[1])
    for direction, inputs in enumerate(directions):
        reference = float64_copies(inputs)
        y_ref = selective_scan_naive(**reference, discretization='poly', reverse=direction == 1)
        ref_leaves = [t for t in reference.values() if t is not None]
        ref_grads = torch.autograd.grad((1 + direction) * y_ref.sum(), ref_leaves)
        torch.testing.assert_close(outputs[direction].double(), y_ref, rtol=1e-4,
                                   atol=1e-4 * y_ref.abs().max().item())
        ours = grads[:len(leaves[0])] if direction == 0 else grads[len(leaves[0]):]
        for grad, ref in zip(ours, ref_grads):
            torch.testing.assert_close(grad.double(), ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


def test_auto_falls_back_when_the_cuda_kernels_cannot_take_b_and_c():
    """bf16 u and B with float32 C (allowed by the API; the CUDA kernels read B and C in one dtype): auto runs it
    on another backend, and backend='cuda' says why it cannot."""
    inputs = make_inputs(2, 8, 197, 16, dtype=torch.bfloat16, device='cuda', seed=8, grad=False)
    for name in ('A', 'C', 'D', 'delta_bias'):
        inputs[name] = inputs[name].float()
    from mmssm.ops.selective_scan import _resolve_backend
    assert _resolve_backend('auto', inputs['u'], inputs['B'], inputs['A'], inputs['C']) != 'cuda'
    y = selective_scan(**inputs, discretization='highorder')
    y_ref = selective_scan(**inputs, discretization='highorder', backend='torch')
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    if 'cuda' in available_backends('cuda'):
        with pytest.raises(ValueError, match=r"backend='cuda' cannot run this call: the CUDA kernels take B and C "
                                             r'in one dtype'):
            selective_scan(**inputs, backend='cuda')


@pytest.mark.slow
def test_bidirectional_launch_past_int32_offsets():
    """B * D * L >= 2^31 elements a direction (bf16, 4 GiB a tensor, ~60 GiB in all): the second direction of a
    one-launch bidirectional scan lies past int32 offsets. Its outputs and the gradients of u and delta, on slices
    at both ends of the batch, against the torch path on those slices (the first direction's too)."""
    batch, dim, length, state = 2, 32768, 32800, 4
    assert batch * dim * length >= 2 ** 31
    generator = torch.Generator(device='cuda').manual_seed(0)

    def randn(*shape, scale=1.0, dtype=torch.bfloat16):
        return torch.randn(*shape, generator=generator, device='cuda', dtype=dtype).mul_(scale)

    directions = []
    for _ in range(2):
        directions.append(dict(
            u=randn(batch, dim, length).requires_grad_(), delta=randn(batch, dim, length, scale=0.5).requires_grad_(),
            A=-(0.2 + torch.rand(dim, state, generator=generator, device='cuda')), B=randn(batch, state, length),
            C=randn(batch, state, length), delta_bias=randn(dim, scale=0.3, dtype=torch.float32) - 0.5))
    names = ('u', 'delta', 'A', 'B', 'C', 'delta_bias')
    outputs = selective_scan_bidirectional(**{n: (directions[0][n], directions[1][n]) for n in names},
                                           backend='triton')
    grads = torch.autograd.grad(outputs[0].sum() + outputs[1].sum(),
                                [directions[d][n] for d in (0, 1) for n in ('u', 'delta')])
    grads = [grads[:2], grads[2:]]
    channels = 16
    for direction, b, first in ((0, batch - 1, dim - channels), (1, 0, 0), (1, batch - 1, dim - channels)):
        part = slice(first, first + channels)
        inputs = directions[direction]
        sliced = dict(u=inputs['u'][b:b + 1, part].detach().requires_grad_(),
                      delta=inputs['delta'][b:b + 1, part].detach().requires_grad_(), A=inputs['A'][part],
                      B=inputs['B'][b:b + 1], C=inputs['C'][b:b + 1], delta_bias=inputs['delta_bias'][part])
        y_ref = selective_scan(**sliced, reverse=direction == 1, backend='torch')
        ref_grads = torch.autograd.grad(y_ref, [sliced['u'], sliced['delta']], torch.ones_like(y_ref))
        label = f'direction {direction}, batch {b}, channels {first}..{first + channels - 1}'
        y = outputs[direction][b:b + 1, part]
        for name, out, ref in (('y', y, y_ref), ('du', grads[direction][0][b:b + 1, part], ref_grads[0]),
                               ('ddelta', grads[direction][1][b:b + 1, part], ref_grads[1])):
            out, ref = out.float(), ref.float()
            assert torch.isfinite(out).all(), f'{label} {name}: non-finite values'
            torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item(),
                                       msg=lambda m, label=label, name=name: f'{label} {name}: {m}')
