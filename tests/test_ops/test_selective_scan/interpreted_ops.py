"""Run by test_compiled_op_cpu.py in a subprocess with TRITON_INTERPRET=1 (Triton reads it when the kernels are
defined): the custom ops and their autograd, driven through Triton's CPU interpreter. ``python interpreted_ops.py
plumbing`` runs opcheck and the softplus checks (quick), ``methods`` every method at L = 70 (a minute or two: the
interpreter takes ~10 ms a step), ``chunked`` the chunk-parallel forward. Prints one line per check and exits
non-zero on the first failure."""
import os
import sys

import torch

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import assert_close, make_inputs  # noqa: E402

from mmssm.ops.selective_scan import _compiled_arguments, selective_scan_naive  # noqa: E402
from mmssm.ops.selective_scan.compiled import scan, selective_scan_bwd, selective_scan_fwd  # noqa: E402

ARGS = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')


# longer than two of the backward's CHECKPOINT_L = 32 step chunks, and not a multiple of them
LENGTH = 70


def check_one_direction(method, with_options, state):
    # one batch element: the interpreter's time goes with batch * dim * L
    inputs = make_inputs(1, 3, LENGTH, state, groups=None if not with_options else 3, dtype=torch.float32,
                         device='cpu', seed=state, grad=False)
    if not with_options:
        for name in ('D', 'z', 'delta_bias'):
            inputs[name] = None
        inputs['delta'] = inputs['delta'].abs() + 0.05
    leaves = {k: v.requires_grad_() if v is not None else None for k, v in inputs.items()}
    lists = [[t] for t in _compiled_arguments(*[leaves[k] for k in ARGS])]
    z = [leaves['z']] if leaves['z'] is not None else []
    out, last = scan('triton', *lists, z, with_options, method, [with_options])
    names = [k for k in ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias', 'z') if leaves[k] is not None]
    weight = torch.randn(out[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
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


def check_softplus_tail(method, shift):
    """delta + delta_bias around ``shift``: at -30 softplus is ~1e-13 (log(1 + exp(x)) in float32 rounds it to 0,
    and the state would never move); at -5 it is its series' range. No D or gate, so y is the scan's alone."""
    inputs = make_inputs(1, 2, 36, 4, dtype=torch.float32, device='cpu', seed=6, grad=False)
    inputs['delta'] = inputs['delta'] + shift
    inputs['D'] = inputs['z'] = None
    names = ('u', 'delta', 'A', 'B', 'C', 'delta_bias')
    leaves = {k: inputs[k].requires_grad_() for k in names}
    lists = [[t] for t in _compiled_arguments(*[leaves[k] for k in ('u', 'delta', 'A', 'B', 'C')], None,
                                              leaves['delta_bias'])]
    out, last = scan('triton', *lists, [], True, method, [False])
    weight = torch.randn(out[0].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = torch.autograd.grad((out[0].double() * weight).sum() + last[0].double().sum(),
                                [leaves[k] for k in names])
    ref = {k: inputs[k].detach().double().requires_grad_() for k in names}
    y_ref, last_ref = selective_scan_naive(**ref, discretization=method, return_last_state=True)
    ref_grads = torch.autograd.grad((y_ref * weight).sum() + last_ref.sum(), [ref[k] for k in names])
    label = f'softplus tail {method} delta ~ {shift}'
    # relative to each tensor's own scale (~1e-13 at -30): a softplus of 0 is off by all of it
    assert_close(f'{label} y', y_ref, out[0], atol=1e-4 * y_ref.abs().max().item())
    assert_close(f'{label} last state', last_ref, last[0], atol=1e-4 * last_ref.abs().max().item())
    for name, grad, ref_grad in zip(names, grads, ref_grads):
        assert_close(f'{label} d{name}', ref_grad, grad, atol=1e-4 * ref_grad.abs().max().item())
    print('ok', label, flush=True)


def check_opcheck():
    """torch.library.opcheck: schema, fake implementations against the real ones, autograd registration."""
    inputs = make_inputs(1, 2, 5, 3, dtype=torch.float32, device='cpu', seed=3, grad=False)
    lists = [[t] for t in _compiled_arguments(*[inputs[k] for k in ARGS])]
    lists = [[t.requires_grad_() for t in group] for group in lists]
    z = [inputs['z'].requires_grad_()]
    arguments = (*lists, z, True, 'bilinear', [False], 'triton', True)
    torch.library.opcheck(selective_scan_fwd, arguments,
                          test_utils=('test_schema', 'test_faketensor', 'test_autograd_registration'))
    out, last, saved = selective_scan_fwd(*arguments)
    bwd_arguments = (torch.ones_like(out), *[[t.detach() for t in group] for group in lists],
                     [z[0].detach()], True, 'bilinear', [False], 'triton', saved, None)
    torch.library.opcheck(selective_scan_bwd, bwd_arguments, test_utils=('test_schema', 'test_faketensor'))
    print('ok opcheck', flush=True)


if __name__ == '__main__':
    from mmssm.ops.selective_scan import METHODS
    part = sys.argv[1] if len(sys.argv) > 1 else 'all'
    if part in ('plumbing', 'all'):
        check_opcheck()
        check_softplus_tail('zoh', -30.0)
        check_softplus_tail('foh', -5.0)
    if part in ('chunked', 'all'):
        # the chunk-parallel forward (chunks of 32 steps: 32 + 32 + 6 at L = 70), the backward from its
        # checkpoints; zoh, and highorder whose three earlier samples cross the chunk boundaries
        from mmssm.ops.selective_scan import triton_scan
        triton_scan.FWD_CHUNK_L = 32
        for method, with_options in (('zoh', False), ('zoh', True), ('highorder', True)):
            check_one_direction(method, with_options=with_options, state=5)
        triton_scan.FWD_CHUNK_L = None
    if part in ('methods', 'all'):
        for index, method in enumerate(METHODS):
            check_one_direction(method, with_options=bool(index % 2), state=4 + index % 2)
