"""The compiled CUDA kernels (mmssm.ops.selective_scan.cuda_scan) against the float64 oracle: forward, last state
and every gradient, for every method, dtype, direction, grouping and optional input; bidirectional launches and
the input checks."""
import pytest
import torch

from mmssm.ops.selective_scan import METHODS, cuda_scan, selective_scan_naive

from .helpers import make_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available() or not cuda_scan.is_available(),
    reason='needs a CUDA device and the compiled kernels (' + cuda_scan.BUILD_HINT + ')')]

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
# max |out - ref| allowed, relative to max |ref| of the tensor
TOLERANCE = {torch.float32: 2e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def check(name, ref, out, dtype):
    assert out is not None, f'{name}: missing'
    assert out.shape == ref.shape, f'{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}'
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), f'{name}: non-finite values'
    scale = ref.abs().max().item() + 1e-12
    error = (out - ref).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f'{name}: max abs error {error:.3e}, scale {scale:.3e} ({dtype})'


def scan_inputs(batch, dim, length, state, groups, dtype, seed, use_D=True, use_z=True, use_bias=True,
                positive_delta=False):
    """Inputs rounded to dtype (kernel side) and the same values in float64 (oracle side); groups=None gives
    (batch, N, L) B and C."""
    inputs = make_inputs(batch, dim, length, state, groups=groups, dtype=torch.float64, seed=seed, device='cuda',
                         grad=False)
    if positive_delta:  # steps for a scan without softplus: delta + delta_bias > 0 (else the state grows without
        # bound over a long sequence)
        inputs['delta'] = torch.nn.functional.softplus(inputs['delta'] - 0.5)
        inputs['delta_bias'] = inputs['delta_bias'].abs()
    if not use_D:
        inputs['D'] = None
    if not use_z:
        inputs['z'] = None
    if not use_bias:
        inputs['delta_bias'] = None
    kernel = {}
    for name, value in inputs.items():
        if value is None:
            kernel[name] = None
        elif name in ('A', 'D', 'delta_bias'):
            kernel[name] = value.float().contiguous()
        else:
            kernel[name] = value.to(dtype).contiguous()
    oracle = {name: None if value is None else value.double().requires_grad_() for name, value in kernel.items()}
    return kernel, oracle


def run_cuda(directions, method, softplus=True, reverse=None, weights=None):
    """forward + backward of the kernels for a list of kernel-side input dicts."""
    count = len(directions)
    reverse = reverse if reverse is not None else [False] * count
    lists = {name: [d[name] for d in directions] for name in NAMES}
    z = lists['z'] if lists['z'][0] is not None else []
    out, last, saved = cuda_scan.forward(lists['u'], lists['delta'], lists['A'], lists['B'], lists['C'], lists['D'],
                                         lists['delta_bias'], z, softplus, method, reverse, save_for_backward=True)
    grads = None
    if weights is not None:
        dout = [w[0].to(out[i].dtype) for i, w in enumerate(weights)]
        dlast = [w[1].float() for w in weights]
        grads = cuda_scan.backward(dout, lists['u'], lists['delta'], lists['A'], lists['B'], lists['C'], lists['D'],
                                   lists['delta_bias'], z, softplus, method, reverse, saved, dlast)
    return out, last, grads


def oracle(inputs, method, reverse, softplus, weight_y, weight_h):
    y, h = selective_scan_naive(**inputs, delta_softplus=softplus, discretization=method, reverse=reverse,
                                return_last_state=True)
    y = y.double()  # naive rounds y to the input dtype; compare in float64
    names = [name for name in NAMES if inputs[name] is not None]
    loss = (y * weight_y.double()).sum() + (h * weight_h.double()).sum()
    grads = torch.autograd.grad(loss, [inputs[name] for name in names])
    return y, h, dict(zip(names, grads))


def compare(method, batch=2, dim=8, length=63, state=16, groups=None, dtype=torch.float32, reverse=False,
            softplus=True, seed=0, **options):
    kernel, ref_inputs = scan_inputs(batch, dim, length, state, groups, dtype, seed, **options)
    generator = torch.Generator().manual_seed(seed + 1)
    weight_y = torch.randn(batch, dim, length, generator=generator, dtype=torch.float64).cuda().to(dtype)
    weight_h = torch.randn(batch, dim, state, generator=generator, dtype=torch.float64).cuda()
    out, last, grads = run_cuda([kernel], method, softplus, [reverse], [(weight_y, weight_h)])
    y_ref, h_ref, grads_ref = oracle(ref_inputs, method, reverse, softplus, weight_y, weight_h)
    check('y', y_ref, out[0], dtype)
    check('last state', h_ref, last[0], dtype)
    du, ddelta, dA, dB, dC, dD, dbias, dz = (g[0] if g else None for g in grads)
    ours = dict(u=du, delta=ddelta, A=dA, B=dB, C=dC, D=dD, z=dz, delta_bias=dbias)
    for name, grad_ref in grads_ref.items():
        check(f'd{name}', grad_ref, ours[name], dtype)
    for name in ('D', 'z', 'delta_bias'):
        if kernel[name] is None:
            assert ours[name] is None, f'd{name} should be None without {name}'


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('length', [1, 63, 197])
def test_methods_fp32(method, length):
    compare(method, length=length, seed=length)


@pytest.mark.parametrize('method', METHODS)
def test_reverse_groups(method):
    compare(method, dim=12, length=70, groups=3, reverse=True, seed=5)


@pytest.mark.parametrize('method', ['zoh', 'highorder', 'rk4'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision(method, dtype):
    compare(method, length=100, dtype=dtype, reverse=dtype == torch.float16, seed=7)


@pytest.mark.parametrize('method', ['zoh', 'poly'])
@pytest.mark.parametrize('length', [2048, 2049])
def test_long(method, length):
    compare(method, batch=1, dim=4, length=length, state=8, reverse=length == 2049, seed=11)


@pytest.mark.parametrize('state', [1, 3, 8, 32])
@pytest.mark.parametrize('method', ['zoh', 'foh', 'bilinear'])
def test_state_sizes(method, state):
    compare(method, dim=40, length=45, state=state, groups=2, seed=state)


# optional inputs left out, or softplus off (then with positive steps): scan_options turns one into keyword arguments
OPTIONAL_INPUTS = [dict(use_D=False), dict(use_z=False), dict(use_bias=False),
                   dict(use_D=False, use_z=False, use_bias=False), dict(softplus=False)]


def scan_options(options):
    """(softplus, scan_inputs keyword arguments) of an OPTIONAL_INPUTS entry."""
    options = dict(options)
    softplus = options.pop('softplus', True)
    return softplus, dict(options, positive_delta=not softplus)


@pytest.mark.parametrize('options', OPTIONAL_INPUTS)
@pytest.mark.parametrize('method', ['zoh', 'highorder'])
def test_optional_inputs(method, options):
    softplus, options = scan_options(options)
    compare(method, length=40, softplus=softplus, seed=3, **options)


def test_fp32_B_with_bf16_inputs():
    kernel, ref_inputs = scan_inputs(2, 8, 50, 16, None, torch.bfloat16, 2)
    for name in ('B', 'C'):
        kernel[name] = ref_inputs[name].detach().float().contiguous()
    out, last, _ = run_cuda([kernel], 'foh')
    y_ref, h_ref, _ = oracle(ref_inputs, 'foh', False, True, torch.zeros(2, 8, 50, device='cuda'),
                             torch.zeros(2, 8, 16, device='cuda'))
    check('y', y_ref, out[0], torch.bfloat16)


@pytest.mark.parametrize('method', ['zoh', 'highorder'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_bidirectional_matches_single(method, dtype):
    forward_inputs, _ = scan_inputs(2, 16, 77, 16, 2, dtype, 20)
    backward_inputs, _ = scan_inputs(2, 16, 77, 16, 2, dtype, 21)
    generator = torch.Generator().manual_seed(3)
    weights = [(torch.randn(2, 16, 77, generator=generator).cuda(), torch.randn(2, 16, 16, generator=generator).cuda())
               for _ in range(2)]
    out2, last2, grads2 = run_cuda([forward_inputs, backward_inputs], method, reverse=[False, True], weights=weights)
    for direction, inputs in enumerate((forward_inputs, backward_inputs)):
        out1, last1, grads1 = run_cuda([inputs], method, reverse=[direction == 1], weights=[weights[direction]])
        torch.testing.assert_close(out2[direction], out1[0], rtol=0, atol=0)
        torch.testing.assert_close(last2[direction], last1[0], rtol=0, atol=0)
        for grad2, grad1 in zip(grads2, grads1):
            # the atomics of dA, dB, dC, dD, ddelta_bias may add in another order
            torch.testing.assert_close(grad2[direction], grad1[0], rtol=1e-5, atol=1e-5)


def test_backward_without_saved_states():
    kernel, _ = scan_inputs(2, 8, 100, 16, None, torch.float32, 4)
    lists = {name: [kernel[name]] for name in NAMES}
    out, last, saved = cuda_scan.forward(lists['u'], lists['delta'], lists['A'], lists['B'], lists['C'], lists['D'],
                                         lists['delta_bias'], lists['z'], True, 'poly', [False], True)
    dout = [torch.randn_like(out[0])]
    args = (lists['u'], lists['delta'], lists['A'], lists['B'], lists['C'], lists['D'], lists['delta_bias'],
            lists['z'], True, 'poly', [False])
    with_saved = cuda_scan.backward(dout, *args, saved, [])
    without = cuda_scan.backward(dout, *args, [], [])
    for a, b in zip(with_saved, without):
        torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)


def _call(**changes):
    kernel, _ = scan_inputs(1, 4, 10, 4, None, torch.float32, 0)
    kernel.update(changes)
    lists = {name: [kernel[name]] for name in NAMES}
    return cuda_scan.forward(lists['u'], lists['delta'], lists['A'], lists['B'], lists['C'], lists['D'],
                             lists['delta_bias'], lists['z'], True, 'zoh', [False])


def test_input_checks():
    with pytest.raises(RuntimeError, match=r'delta must have shape .*\(1, 4, 10\), got \(1, 4, 9\)'):
        _call(delta=torch.randn(1, 4, 9, device='cuda'))
    with pytest.raises(RuntimeError, match='A must have dtype Float'):
        _call(A=-torch.rand(4, 4, device='cuda', dtype=torch.float64))
    with pytest.raises(RuntimeError, match='must be contiguous'):
        _call(u=torch.randn(1, 10, 4, device='cuda').transpose(1, 2))
    with pytest.raises(RuntimeError, match='between 1 and 32, got 33'):
        _call(A=-torch.rand(4, 33, device='cuda'), B=torch.randn(1, 1, 33, 10, device='cuda'),
              C=torch.randn(1, 1, 33, 10, device='cuda'))
    with pytest.raises(RuntimeError, match='groups of B'):
        _call(B=torch.randn(1, 3, 4, 10, device='cuda'), C=torch.randn(1, 3, 4, 10, device='cuda'))
    with pytest.raises(RuntimeError, match='must be on'):
        _call(D=torch.randn(4))
    with pytest.raises(RuntimeError, match='z must have dtype'):
        _call(z=torch.randn(1, 4, 10, device='cuda', dtype=torch.float16))
    with pytest.raises(ValueError, match='discretization must be one of'):
        kernel, _ = scan_inputs(1, 4, 10, 4, None, torch.float32, 0)
        cuda_scan.forward([kernel['u']], [kernel['delta']], [kernel['A']], [kernel['B']], [kernel['C']], [], [], [],
                          True, 'euler', [False])
