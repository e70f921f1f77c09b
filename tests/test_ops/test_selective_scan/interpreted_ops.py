"""Run by test_compiled_op_cpu.py in a subprocess with TRITON_INTERPRET=1 (Triton reads it when the kernels are
defined): the custom ops and their autograd, driven through Triton's CPU interpreter. ``python interpreted_ops.py
plumbing`` runs opcheck and the softplus checks (quick), ``layouts`` the strided (channels-last) inputs of a Vim
block, ``methods`` every method at L = 70 (a minute or two: the interpreter takes ~10 ms a step), ``chunked`` the
chunk-parallel forward and segment-parallel backward, ``segments`` every method through the segment-parallel
backward, ``gaps`` token pruning's gaps in the kernel. Prints one line per check and exits non-zero on the first
failure."""
import os
import sys

import torch
import triton
import triton.language as tl

# on the CPU through the interpreter, or compiled on a CUDA device (``python interpreted_ops.py chunked`` there: a
# quick check of the kernels after a change, without the OpenMMLab stack)
DEVICE = 'cpu' if os.environ.get('TRITON_INTERPRET') == '1' else 'cuda'
assert DEVICE == 'cpu' or torch.cuda.is_available(), 'run with TRITON_INTERPRET=1, or on a CUDA device'
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import assert_close, make_inputs  # noqa: E402

from mmssm.ops.selective_scan import _compiled_arguments, selective_scan_naive  # noqa: E402
from mmssm.ops.selective_scan.compiled import scan, selective_scan_bwd, selective_scan_fwd  # noqa: E402
from mmssm.ops.selective_scan.triton_scan import _sigmoid, _softplus  # noqa: E402

ARGS = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')


# longer than two of the backward's CHECKPOINT_L = 32 step chunks, and not a multiple of them
LENGTH = 70


def check_one_direction(method, with_options, state):
    # one batch element: the interpreter's time goes with batch * dim * L
    inputs = make_inputs(1, 3, LENGTH, state, groups=None if not with_options else 3, dtype=torch.float32,
                         device=DEVICE, seed=state, grad=False)
    if not with_options:
        for name in ('D', 'z', 'delta_bias'):
            inputs[name] = None
        inputs['delta'] = inputs['delta'].abs() + 0.05
    leaves = {k: v.requires_grad_() if v is not None else None for k, v in inputs.items()}
    lists = [[t] for t in _compiled_arguments(*[leaves[k] for k in ARGS], 'triton')]
    z = [leaves['z']] if leaves['z'] is not None else []
    out, last = scan('triton', *lists, z, with_options, method, [with_options])
    names = [k for k in ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias', 'z') if leaves[k] is not None]
    weight = torch.randn(out[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(DEVICE)
    grads = torch.autograd.grad((out[0].double() * weight).sum() + last[0].double().sum(),
                                [leaves[k] for k in names])
    ref = {k: v.detach().double().requires_grad_() if v is not None else None for k, v in inputs.items()}
    y_ref, last_ref = selective_scan_naive(**ref, discretization=method, delta_softplus=with_options,
                                           reverse=with_options, return_last_state=True)
    ref_grads = torch.autograd.grad((y_ref * weight).sum() + last_ref.sum(), [ref[k] for k in names])
    label = f'{method} options={with_options} N={state}'
    assert_close(f'{label} y', y_ref, out[0], atol=1e-4 * y_ref.abs().max().item())
    assert_close(f'{label} last state', last_ref, last[0], atol=1e-4 * last_ref.abs().max().item())
    for name, grad, ref_grad in zip(names, grads, ref_grads):
        assert grad.shape == ref_grad.shape, f'{label} d{name}: shape {tuple(grad.shape)}'
        assert_close(f'{label} d{name}', ref_grad, grad, atol=1e-4 * ref_grad.abs().max().item())
    print('ok', label, flush=True)


def check_softplus_and_sigmoid():
    """The kernels' softplus (log1p(exp(-|x|)) by its atanh series) and sigmoid against float64 torch on x in
    [-120, 120], as compiled on a GPU (approximate exp2 and division) or interpreted: relative error below
    1.5e-6 + 6e-8 |x| (the float32 rounding of x log2(e) before the exp2) where exp(-|x|) / 2 is a normal float32
    (x > -86); below that the GPU flushes it to 0, so softplus(x) < 1e-37."""
    @triton.jit
    def kernel(x_ptr, softplus_ptr, sigmoid_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offsets, mask=offsets < n)
        tl.store(softplus_ptr + offsets, _softplus(x), mask=offsets < n)
        tl.store(sigmoid_ptr + offsets, _sigmoid(x), mask=offsets < n)

    x = torch.cat([torch.linspace(-120, 120, 4001), torch.linspace(-1, 1, 2001), torch.linspace(15, 22, 701)])
    x = x.to(DEVICE)
    softplus, sigmoid = torch.empty_like(x), torch.empty_like(x)
    kernel[(triton.cdiv(x.numel(), 1024),)](x, softplus, sigmoid, x.numel(), BLOCK=1024)
    x64 = x.double()
    ref = torch.nn.functional.softplus(x64, threshold=1000.0)
    normal, bound = x64 > -86, 1.5e-6 + 6e-8 * x64.abs()
    error = ((softplus.double() - ref).abs() / ref / bound)[normal].max().item()
    assert error < 1, f'softplus: largest relative error {error:.3g} x its bound'
    assert softplus[~normal].abs().max().item() < 1e-37, softplus[~normal]
    sig_error = ((sigmoid.double() - torch.sigmoid(x64)).abs() / torch.sigmoid(x64) / bound)[normal].max().item()
    assert sig_error < 1, f'sigmoid: largest relative error {sig_error:.3g} x its bound'
    print(f'ok softplus and sigmoid (largest errors {error:.2g}, {sig_error:.2g} x their bounds)', flush=True)


def check_softplus_tail(method, shift, through_op=False):
    """delta + delta_bias around ``shift``: at -30 softplus is ~1e-13 (log(1 + exp(x)) in float32 rounds it to 0,
    and the state would never move); at -5 it is its series' range. No D or gate, so y is the scan's alone.
    Gradients through the eager autograd.Function, or with ``through_op`` the custom op's own autograd (what
    torch.compile traces)."""
    from mmssm.ops.selective_scan import compiled
    route = compiled.op_route
    if through_op:
        compiled.op_route = lambda tensors: 'op'
    inputs = make_inputs(1, 2, 36, 4, dtype=torch.float32, device=DEVICE, seed=6, grad=False)
    inputs['delta'] = inputs['delta'] + shift
    inputs['D'] = inputs['z'] = None
    names = ('u', 'delta', 'A', 'B', 'C', 'delta_bias')
    leaves = {k: inputs[k].requires_grad_() for k in names}
    lists = [[t] for t in _compiled_arguments(*[leaves[k] for k in ('u', 'delta', 'A', 'B', 'C')], None,
                                              leaves['delta_bias'], 'triton')]
    out, last = scan('triton', *lists, [], True, method, [False])
    compiled.op_route = route
    assert (type(out.grad_fn).__name__ == '_EagerScanBackward') != through_op, out.grad_fn
    weight = torch.randn(out[0].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(DEVICE)
    grads = torch.autograd.grad((out[0].double() * weight).sum() + last[0].double().sum(),
                                [leaves[k] for k in names])
    ref = {k: inputs[k].detach().double().requires_grad_() for k in names}
    y_ref, last_ref = selective_scan_naive(**ref, discretization=method, return_last_state=True)
    ref_grads = torch.autograd.grad((y_ref * weight).sum() + last_ref.sum(), [ref[k] for k in names])
    label = f'softplus tail {method} delta ~ {shift}' + (' (the op\'s autograd)' if through_op else '')
    # relative to each tensor's own scale (~1e-13 at -30): a softplus of 0 is off by all of it
    assert_close(f'{label} y', y_ref, out[0], atol=1e-4 * y_ref.abs().max().item())
    assert_close(f'{label} last state', last_ref, last[0], atol=1e-4 * last_ref.abs().max().item())
    for name, grad, ref_grad in zip(names, grads, ref_grads):
        assert_close(f'{label} d{name}', ref_grad, grad, atol=1e-4 * ref_grad.abs().max().item())
    print('ok', label, flush=True)


def strided_inputs(batch, dim, length, state, rank, seed, dtype=torch.float32):
    """A Vim block's scan inputs in the layouts its matmuls produce, per direction: u and delta (batch, dim, L)
    views of (batch, L, dim) tensors; B and C (batch, 1, N, L) slices of one (batch, L, rank + 2N) x_proj output;
    z one (batch, dim, L) slice of a (batch, L, 2 dim) in_proj output, shared by both directions. ``dtype``: of
    those activations (A, D and the bias stay float32)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, dtype=dtype):
        return (torch.randn(*shape, generator=g) * scale).to(DEVICE, dtype).requires_grad_()

    xz = randn(batch, length, 2 * dim)
    leaves = dict(xz=xz)
    per_direction = []
    for d in range(2):
        u, delta = randn(batch, length, dim), randn(batch, length, dim, scale=0.5)
        x_dbl = randn(batch, length, rank + 2 * state)
        A = (-torch.rand(dim, state, generator=g) - 0.5).to(DEVICE).requires_grad_()
        D, bias = randn(dim, dtype=torch.float32), randn(dim, scale=0.5, dtype=torch.float32)
        leaves.update({f'u{d}': u, f'delta{d}': delta, f'x_dbl{d}': x_dbl, f'A{d}': A, f'D{d}': D, f'bias{d}': bias})
        B = x_dbl[..., rank:rank + state].transpose(1, 2).unsqueeze(1)
        C = x_dbl[..., rank + state:].transpose(1, 2).unsqueeze(1)
        per_direction.append((u.transpose(1, 2), delta.transpose(1, 2), A, B, C, D, bias))
    z = xz[..., dim:].transpose(1, 2)
    return leaves, per_direction, z


def check_strided_layouts(method):
    """Both directions in one launch on the strided inputs above (no copies): forward, last states and every
    gradient against the float64 loop on contiguous copies; the outputs come back channels-last."""
    from mmssm.ops.selective_scan.triton_scan import channels_last
    length = 40  # past the backward's first 32-step checkpoint chunk
    leaves, per_direction, z = strided_inputs(2, 8, length, 4, rank=3, seed=11)
    lists = [[per_direction[d][i] for d in (0, 1)] for i in range(7)]
    out, last = scan('triton', *lists, [z, z], True, method, [False, True])
    assert channels_last(out[0]) and channels_last(out[1]), 'outputs not in the channels-last layout of u'
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(DEVICE)
    names = sorted(leaves)
    grads = torch.autograd.grad((out.double() * weight).sum() + last.double().sum(), [leaves[k] for k in names])
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    total = 0
    for d in (0, 1):  # the same views of the float64 leaves
        xz = ref_leaves['xz']
        x_dbl = ref_leaves[f'x_dbl{d}']
        y, h = selective_scan_naive(
            ref_leaves[f'u{d}'].transpose(1, 2), ref_leaves[f'delta{d}'].transpose(1, 2), ref_leaves[f'A{d}'],
            x_dbl[..., 3:7].transpose(1, 2), x_dbl[..., 7:].transpose(1, 2), D=ref_leaves[f'D{d}'],
            z=xz[..., 8:].transpose(1, 2), delta_bias=ref_leaves[f'bias{d}'], delta_softplus=True,
            discretization=method, reverse=d == 1, return_last_state=True)
        assert_close(f'strided {method} y{d}', y, out[d], atol=1e-4 * y.abs().max().item())
        assert_close(f'strided {method} last{d}', h, last[d], atol=1e-4 * h.abs().max().item())
        total = total + (y * weight[d]).sum() + h.sum()
    ref_grads = torch.autograd.grad(total, [ref_leaves[k] for k in names])
    for name, grad, ref_grad in zip(names, grads, ref_grads):
        assert_close(f'strided {method} d{name}', ref_grad, grad, atol=1e-4 * ref_grad.abs().max().item())
    print('ok strided layouts', method, flush=True)


def check_opcheck():
    """torch.library.opcheck: schema, fake implementations against the real ones, autograd registration."""
    inputs = make_inputs(1, 2, 5, 3, dtype=torch.float32, device=DEVICE, seed=3, grad=False)
    lists = [[t] for t in _compiled_arguments(*[inputs[k] for k in ARGS], 'triton')]
    lists = [[t.requires_grad_() for t in group] for group in lists]
    z = [inputs['z'].requires_grad_()]
    arguments = (*lists, z, True, 'bilinear', [False], 'triton', True, False)
    torch.library.opcheck(selective_scan_fwd, arguments,
                          test_utils=('test_schema', 'test_faketensor', 'test_autograd_registration'))
    out, last, saved = selective_scan_fwd(*arguments)
    bwd_arguments = (torch.ones_like(out), *[[t.detach() for t in group] for group in lists],
                     [z[0].detach()], True, 'bilinear', [False], 'triton', saved, None)
    torch.library.opcheck(selective_scan_bwd, bwd_arguments, test_utils=('test_schema', 'test_faketensor'))
    # the fake implementations must give the real ones' strides: channels-last inputs, channels-last outputs
    _, per_direction, z = strided_inputs(1, 4, 6, 3, rank=2, seed=5)
    lists = [[per_direction[d][i].detach() for d in (0, 1)] for i in range(7)]
    z = z.detach()
    torch.library.opcheck(selective_scan_fwd, (*lists, [z, z], True, 'zoh', [False, True], 'triton', True, False),
                          test_utils=('test_schema', 'test_faketensor'))
    out, last, saved = selective_scan_fwd(*lists, [z, z], True, 'zoh', [False, True], 'triton', True, False)
    torch.library.opcheck(selective_scan_bwd, (torch.ones_like(out), *lists, [z, z], True, 'zoh', [False, True],
                                               'triton', saved, None), test_utils=('test_schema', 'test_faketensor'))
    print('ok opcheck', flush=True)


def check_merged():
    """merged=True: the two directions' outputs side by side in each token's row ((batch, L, 2, dim)), equal to
    the plain layout's, forward (whole-sequence and chunk-parallel) and every gradient (the backward reads dout in
    that layout); the custom op's fake implementation gives the same strides."""
    from mmssm.ops.selective_scan import triton_scan
    _, per_direction, z = strided_inputs(2, 4, 45, 3, rank=2, seed=6)
    lists = [[per_direction[d][i] for d in (0, 1)] for i in range(7)]
    options = ([z, z], True, 'zoh', [False, True])
    for chunk in (None, 32):  # (32 + 13 steps)
        triton_scan.FWD_CHUNK_L = chunk
        plain, _ = scan('triton', *lists, *options)
        merged, _ = scan('triton', *lists, *options, merged=True)
        batch, dim, length = plain.shape[1:]
        assert merged.permute(1, 3, 0, 2).is_contiguous() and merged.shape == plain.shape, merged.stride()
        assert_close(f'merged chunk={chunk}', plain, merged, atol=0)
        leaves = [t for group in lists for t in group] + [z]
        weight = torch.randn(batch, length, 2, dim, device=DEVICE)
        grads = torch.autograd.grad((merged.permute(1, 3, 0, 2) * weight).sum(), leaves)
        grads_ref = torch.autograd.grad((plain.permute(1, 3, 0, 2) * weight).sum(), leaves)
        for index, (a, b) in enumerate(zip(grads, grads_ref)):
            assert_close(f'merged chunk={chunk} grad {index}', b, a, atol=1e-6 * b.abs().max().item())
    triton_scan.FWD_CHUNK_L = None
    detached = [[t.detach() for t in group] for group in lists]
    torch.library.opcheck(selective_scan_fwd, (*detached, [z.detach()] * 2, *options[1:], 'triton', True, True),
                          test_utils=('test_schema', 'test_faketensor'))
    print('ok merged outputs', flush=True)


def check_gaps():
    """gap_steps (token pruning) in inference on the Triton backend: the gaps run in the kernel (gap_form is not
    called), one and two directions, whole-sequence and chunk-parallel forward, against the float64 torch gap scan;
    with gradients it takes gap_form, and the kernel refuses gaps there."""
    import pytest

    import mmssm.ops.selective_scan as ss
    from mmssm.ops.selective_scan import triton_scan
    if DEVICE == 'cpu':  # CPU tensors reach the kernels (the interpreter runs them)
        ss.available_backends = lambda device: ['triton', 'torch']
    forms, original = [], ss.gap_form
    ss.gap_form = lambda *args, **kwargs: forms.append(1) or original(*args, **kwargs)
    inputs = make_inputs(2, 3, 40, 4, dtype=torch.float32, device=DEVICE, seed=4, grad=False)
    gaps = [torch.randint(0, 4, (2, 40), generator=torch.Generator().manual_seed(s)).float().to(DEVICE)
            for s in (1, 2)]
    ref = {k: v.double() for k, v in inputs.items()}
    pairs = {k: (v, v.flip(-1)) if k in ('u', 'delta', 'B', 'C') else (v, v) for k, v in inputs.items() if k != 'z'}
    ref_pairs = {k: tuple(t.double() for t in v) for k, v in pairs.items()}
    for chunk in (None, 32):
        triton_scan.FWD_CHUNK_L = chunk
        for reverse in (False, True):
            with torch.no_grad():
                y = ss.selective_scan(**inputs, gap_steps=gaps[0], reverse=reverse, backend='triton')
            assert not forms, forms
            y_ref = ss.selective_scan(**ref, gap_steps=gaps[0].double(), reverse=reverse, backend='torch')
            assert_close(f'gaps chunk={chunk} reverse={reverse}', y_ref, y, atol=1e-4 * y_ref.abs().max().item())
            forms.clear()
        with torch.no_grad():
            y_pair = ss.selective_scan_bidirectional(**pairs, z=inputs['z'], gap_steps=gaps, backend='triton')
        assert not forms, forms
        ref_pair = ss.selective_scan_bidirectional(**ref_pairs, z=ref['z'], gap_steps=[g.double() for g in gaps],
                                                   backend='torch')
        for y, y_ref in zip(y_pair, ref_pair):
            assert_close(f'gaps chunk={chunk} bidirectional', y_ref, y, atol=1e-4 * y_ref.abs().max().item())
        forms.clear()
        print('ok gaps in the kernel, chunk', chunk, flush=True)
    triton_scan.FWD_CHUNK_L = None
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    y = ss.selective_scan(**leaves, gap_steps=gaps[0], backend='triton')
    assert len(forms) == 1, forms  # with gradients: gap_form
    y_ref = ss.selective_scan(**ref, gap_steps=gaps[0].double(), backend='torch')
    assert_close('gaps with gradients', y_ref, y, atol=1e-4 * y_ref.abs().max().item())
    arguments = [[t] for t in _compiled_arguments(*[leaves[k] for k in ARGS], 'triton')]
    with pytest.raises(ValueError, match='gap runs in the kernel only for inference'):
        scan('triton', *arguments, [], True, 'zoh', [False], gap=[gaps[0]])
    ss.gap_form = original
    print('ok gaps with gradients', flush=True)


if __name__ == '__main__':
    from mmssm.ops.selective_scan import METHODS
    part = sys.argv[1] if len(sys.argv) > 1 else 'all'
    if part in ('plumbing', 'all'):
        check_opcheck()
        check_merged()
        check_softplus_and_sigmoid()
        check_one_direction('zoh', with_options=True, state=16)  # the forward's softplus_log (it saves, N_PAD 16)
        check_softplus_tail('zoh', -30.0)
        check_softplus_tail('foh', -5.0)
        check_softplus_tail('foh', -5.0, through_op=True)
    if part in ('layouts', 'all'):
        from mmssm.ops.selective_scan import triton_scan
        check_strided_layouts('zoh')  # dB / dC per program, summed after the kernel (8 programs a group)
        check_strided_layouts('bilinear')
        triton_scan.BWD_BC_PARTIAL = False  # and added atomically
        check_strided_layouts('zoh')
        triton_scan.BWD_BC_PARTIAL = True
    if part in ('chunked', 'all'):
        # the chunk-parallel forward (chunks of 32 steps: 32 + 32 + 6 at L = 70) and the segment-parallel backward
        # (the same segments) from its checkpoints; zoh, and highorder whose three earlier samples cross the
        # boundaries; then both directions (one reversed) on strided inputs, bilinear, backward segments 32 + 8
        from mmssm.ops.selective_scan import triton_scan
        triton_scan.FWD_CHUNK_L = triton_scan.BWD_SEGMENT_L = 32
        for method, with_options in (('zoh', False), ('zoh', True), ('highorder', True)):
            check_one_direction(method, with_options=with_options, state=5)
        check_strided_layouts('bilinear')
        triton_scan.FWD_CHUNK_L = triton_scan.BWD_SEGMENT_L = None
    if part == 'segments':  # every method through the segment-parallel backward (slow in the interpreter)
        from mmssm.ops.selective_scan import triton_scan
        triton_scan.BWD_SEGMENT_L = 32
        for index, method in enumerate(METHODS):
            check_one_direction(method, with_options=not index % 2, state=4 + index % 2)
        triton_scan.BWD_BC_PARTIAL = False  # dB / dC added atomically, the boundary terms after
        check_strided_layouts('bilinear')
        triton_scan.BWD_BC_PARTIAL = True
        triton_scan.BWD_SEGMENT_L = None
    if part in ('gaps', 'all'):
        check_gaps()
    if part in ('methods', 'all'):
        for index, method in enumerate(METHODS):
            check_one_direction(method, with_options=bool(index % 2), state=4 + index % 2)
