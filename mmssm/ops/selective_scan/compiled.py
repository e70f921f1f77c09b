"""The GPU backends (Triton, and the CUDA extension of csrc/) behind one pair of ``torch.library`` custom ops.

``mmssm::selective_scan_fwd`` and ``mmssm::selective_scan_bwd`` take one or two directions (lists of tensors), so
that a bidirectional Vim block is one launch; their fake implementations give the output shapes, so that
``torch.compile(model, fullgraph=True)`` traces through the scan, and ``register_autograd`` connects the two.
The backend is an argument of the op; each backend module (triton_scan, cuda_scan) provides ``forward``,
``backward`` and ``saved_shape`` with the same list-based contract.
"""
import importlib

import torch
from torch import Tensor

from ..eager import direct_call, op_route

_MODULE_NAMES = {'triton': 'triton_scan', 'cuda': 'cuda_scan'}


def backend_module(backend: str):
    return importlib.import_module(f'{__package__}.{_MODULE_NAMES[backend]}')


def _stacked(tensors: list) -> Tensor:
    """The (directions, ...) tensor of a backend's per-direction outputs, without a copy when they are already
    the consecutive slices of one buffer (in any layout)."""
    first = tensors[0]
    if len(tensors) == 1:
        return first.unsqueeze(0)
    step = first.numel()
    if all(t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr() and t.shape == first.shape
           and t.stride() == first.stride() and t.storage_offset() == first.storage_offset() + i * step
           for i, t in enumerate(tensors)):
        return first.as_strided((len(tensors),) + tuple(first.shape), (step,) + tuple(first.stride()))
    return torch.stack(tensors)


def _rows_like(u: Tensor, directions: int, dtype=None, merged=False) -> Tensor:
    """An empty (directions, batch, dim, L) tensor in u's layout (or, ``merged``, triton_scan.merged_rows'), as
    the backends allocate their outputs."""
    from .triton_scan import channels_last, merged_rows, new_rows
    if merged:
        return merged_rows(directions, *u.shape, device=u.device, dtype=dtype or u.dtype)
    return new_rows(directions, *u.shape, channels_last(u), device=u.device, dtype=dtype or u.dtype)


def _saved_shape(backend, u, A, save):
    batch, dim, length = u.shape
    return backend_module(backend).saved_shape(batch, dim, length, A.shape[1], save)


def _scan_fwd(u: list[Tensor], delta: list[Tensor], A: list[Tensor], B: list[Tensor], C: list[Tensor],
              D: list[Tensor], delta_bias: list[Tensor], z: list[Tensor], softplus: bool, method: str,
              reverse: list[bool], backend: str, save: bool, merged: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(out (dirs, batch, dim, L), last state (dirs, batch, dim, N) float32, saved for the backward). ``merged``
    (Triton): out in triton_scan.merged_rows' layout."""
    if backend == 'triton':  # its (directions, ...) outputs as they are
        return backend_module(backend).forward(u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, save,
                                               stacked=True, merged=merged)
    outs, lasts, saved = backend_module(backend).forward(u, delta, A, B, C, D, delta_bias, z, softplus, method,
                                                   reverse, save)
    return _stacked(outs), _stacked(lasts), _stacked(saved)


selective_scan_fwd = torch.library.custom_op('mmssm::selective_scan_fwd', _scan_fwd, mutates_args=())


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, backend, save, merged):
    directions = len(u)
    state = A[0].shape[1]
    batch, dim, _ = u[0].shape
    out = _rows_like(u[0], directions, merged=merged)
    last = u[0].new_empty((directions, batch, dim, state), dtype=torch.float32)
    saved = u[0].new_empty((directions,) + tuple(_saved_shape(backend, u[0], A[0], save)), dtype=torch.float32)
    return out, last, saved


def _scan_bwd(dout: Tensor, u: list[Tensor], delta: list[Tensor], A: list[Tensor], B: list[Tensor],
              C: list[Tensor], D: list[Tensor], delta_bias: list[Tensor], z: list[Tensor], softplus: bool,
              method: str, reverse: list[bool], backend: str, saved: Tensor, dlast: Tensor | None) -> list[Tensor]:
    """[du, ddelta, dA, dB, dC, dD, ddelta_bias] (+ [dz] with a gate), each stacked over directions."""
    grads = backend_module(backend).backward(list(dout.unbind(0)), u, delta, A, B, C, D, delta_bias, z, softplus,
                                             method, reverse, list(saved.unbind(0)),
                                             list(dlast.unbind(0)) if dlast is not None else [])
    return [_stacked(g) for g in grads if len(g)]


selective_scan_bwd = torch.library.custom_op('mmssm::selective_scan_bwd', _scan_bwd, mutates_args=())


@selective_scan_bwd.register_fake
def _(dout, u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, backend, saved, dlast):
    directions = len(u)

    def like(tensor, dtype=None):
        return tensor.new_empty((directions,) + tuple(tensor.shape), dtype=dtype or tensor.dtype)

    grads = [_rows_like(u[0], directions), _rows_like(u[0], directions, delta[0].dtype), like(A[0], torch.float32),
             like(B[0]), like(C[0]), like(D[0], torch.float32), like(delta_bias[0], torch.float32)]
    if len(z):
        grads.append(_rows_like(u[0], directions, z[0].dtype))
    return grads


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, backend = inputs[:12]
    ctx.directions, ctx.has_z = len(u), len(z) > 0
    ctx.options = (softplus, method, reverse, backend)
    ctx.save_for_backward(*u, *delta, *A, *B, *C, *D, *delta_bias, *z, output[2])


def _grads(ctx, dout, dlast, bwd=selective_scan_bwd):
    """Per input list (u, delta, A, B, C, D, delta_bias, z), its gradients, from ``ctx`` as :func:`_setup_context`
    fills it (z's an empty list without a gate)."""
    saved = ctx.saved_tensors
    n = ctx.directions
    lists = [list(saved[i * n:(i + 1) * n]) for i in range(7)]
    z = list(saved[7 * n:8 * n]) if ctx.has_z else []
    softplus, method, reverse, backend = ctx.options
    grads = bwd(dout, *lists, z, softplus, method, reverse, backend, saved[-1],
                dlast.contiguous() if dlast is not None else None)
    per_input = [list(g.unbind(0)) for g in grads]
    # cast each gradient to its input's dtype (the backends accumulate some in float32)
    inputs = lists + ([z] if ctx.has_z else [])
    per_input = [[g.to(x.dtype) for g, x in zip(gs, xs)] for gs, xs in zip(per_input, inputs)]
    if not ctx.has_z:
        per_input.append([])  # z was an empty list: the gradient has its structure
    return per_input


def _backward(ctx, dout, dlast, dsaved):
    return (*_grads(ctx, dout, dlast), None, None, None, None, None, None)


torch.library.register_autograd('mmssm::selective_scan_fwd', _backward, setup_context=_setup_context)


class _EagerScan(torch.autograd.Function):
    """The custom op's autograd for eager training, without the op: the same backends and gradients, none of the
    dispatcher's and pytree's host time. ``tensors``: u, delta, A, B, C, D, delta_bias (and z) of every
    direction, list after list."""

    @staticmethod
    def forward(ctx, options, directions, has_z, merged, *tensors):
        lists = [list(tensors[i * directions:(i + 1) * directions]) for i in range(8 if has_z else 7)]
        inputs = (*lists[:7], lists[7] if has_z else [], *options, True, merged)
        out, last, saved = _scan_fwd(*inputs)
        _setup_context(ctx, inputs, (out, last, saved))
        ctx.set_materialize_grads(False)  # no zeros for an unused last state: the backward takes None
        ctx.out_layout = (out.shape, out.stride(), out.dtype, out.device)  # (not out itself: a reference cycle)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        if dout is None:
            shape, stride, dtype, device = ctx.out_layout
            dout = torch.empty_strided(shape, stride, dtype=dtype, device=device).zero_()
        return None, None, None, None, *[g for grads in _grads(ctx, dout, dlast, _scan_bwd) for g in grads]


def kernel_direct(backend, tensors) -> bool:
    """Whether :func:`scan` takes ``gap`` (and ``a_log``) for these inputs: a direct inference call of the Triton
    backend. ``tensors`` as :func:`~mmssm.ops.eager.direct_call` takes them (any iterable)."""
    return backend == 'triton' and direct_call(tensors)


def scan(backend, u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, gap=None, a_log=False,
         merged=False):
    """One or two directions through the custom op; every argument but the flags is a list, z possibly empty.
    ``gap``: a list of (batch, L) counts of pruned steps (token pruning, zoh), and ``a_log``: A holds a model's
    A_log parameters, with A, D, delta_bias in any float dtype (nothing computed from them on the host); both
    only where :func:`kernel_direct` says so (elsewhere gap_form turns the gaps into plain scan inputs).
    ``merged`` (Triton): out in triton_scan.merged_rows' layout, the directions side by side in each token's row.
    Returns (out, last_state), each stacked over directions."""
    if merged and backend != 'triton':
        raise ValueError(f"scan: merged outputs are a layout of the Triton backend, got backend {backend!r}.")
    tensors = [t for group in (u, delta, A, B, C, D, delta_bias, z) for t in group]
    if (gap is not None or a_log) and not kernel_direct(backend, tensors):
        option = 'gap' if gap is not None else 'a_log'
        raise ValueError(f'scan: {option} runs in the kernel only for inference on the Triton backend (got backend '
                         f'{backend!r}, gradients or tracing); use selective_scan(...) instead.')
    route = op_route(tensors)
    if route == 'direct':  # inference: the backend without the op's wrappers
        if backend == 'triton':  # its (directions, ...) outputs as they are
            out, last, _ = backend_module(backend).forward(u, delta, A, B, C, D, delta_bias, z, softplus, method,
                                                           reverse, False, gap=gap, stacked=True, a_log=a_log,
                                                           merged=merged)
            return out, last
        outs, lasts, _ = backend_module(backend).forward(u, delta, A, B, C, D, delta_bias, z, softplus, method,
                                                         reverse, False)
        return _stacked(outs), _stacked(lasts)
    if route == 'function':  # eager training: the op's autograd without the op
        return _EagerScan.apply((softplus, method, reverse, backend), len(u), len(z) > 0, merged, *tensors)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    out, last, _ = selective_scan_fwd(u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, backend,
                                      needs_grad, merged)
    return out, last
