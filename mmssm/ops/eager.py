"""The hot path in eager mode (the Vim block's): when a custom op's implementation may run without the op
(skipping the dispatcher and the op's autograd and fake wrappers), a split of a matmul's output whose backward
writes the gradient once, and plain-Python stand-ins for Triton's host helpers, which are jit
``ConstexprFunction`` objects costing ~2 us a call."""
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode


def op_route(tensors) -> str:
    """How a call of a custom op on ``tensors`` runs: 'op' while something needs the op boundary (compiling,
    tracing, or a dispatch mode such as a FLOP counter or an op recorder watching); else 'function' when a
    gradient flows to ``tensors`` (the op's autograd as a plain ``torch.autograd.Function``: the boundary would
    only cost host time), or 'direct' (the implementation itself). ``tensors``: any iterable, read only with
    autograd on (so a module's ``parameters()`` cost nothing in inference)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or _get_current_dispatch_mode() is not None:
        return 'op'
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return 'function'
    return 'direct'


def direct_call(tensors) -> bool:
    """True when nothing needs the op boundary: :func:`op_route` says 'direct'."""
    return op_route(tensors) == 'direct'


class _Parts(torch.autograd.Function):
    """See :func:`split_channels` and :func:`unbind_parts`."""

    @staticmethod
    def forward(ctx, x, sizes, copies):
        ctx.sizes, ctx.copies = sizes, copies
        ctx.set_materialize_grads(False)
        parts = _parts(x, sizes)
        return tuple(part.view(part.shape) for part in parts for _ in range(copies))

    @staticmethod
    def backward(ctx, *grads):
        sizes, copies = ctx.sizes, ctx.copies
        given = next(g for g in grads if g is not None)
        shape = given.shape[:-1] + (sum(sizes),) if sizes else (len(grads) // copies,) + given.shape
        out = given.new_empty(shape)
        for index, target in enumerate(_parts(out, sizes)):
            part = [g for g in grads[index * copies:(index + 1) * copies] if g is not None]
            if not part:
                target.zero_()
            elif len(part) == 1:
                target.copy_(part[0])
            else:
                torch.add(part[0], part[1], out=target)
                for g in part[2:]:
                    target.add_(g)
        return out, None, None


def _parts(x, sizes):
    return x.split(sizes, dim=-1) if sizes else x.unbind(0)


def split_channels(x: torch.Tensor, sizes: tuple, copies: int = 1) -> tuple:
    """``x.split(sizes, dim=-1)`` with each part returned ``copies`` times (one per consumer), for eager training:
    the backward writes each part's summed gradient into one buffer, in one add or copy a part. Autograd's own
    split would fill a zero tensor of x's size per part, copy the part's gradient in, sum those, and sum the
    copies' gradients first (for Vim's block, 7 full-size kernels in place of 2). Elsewhere (no gradient to
    ``x``, or compiling, where the compiler fuses these) the plain views, as :func:`op_route` says."""
    if op_route((x,)) != 'function':
        return tuple(part for part in x.split(sizes, dim=-1) for _ in range(copies))
    return _Parts.apply(x, tuple(sizes), copies)


def unbind_parts(x: torch.Tensor, copies: int = 1) -> tuple:
    """``x.unbind(0)`` with each part returned ``copies`` times, as :func:`split_channels`: the backward adds each
    part's gradients straight into its slice of one buffer (autograd would add them, then stack the sums)."""
    if op_route((x,)) != 'function':
        return tuple(part for part in x.unbind(0) for _ in range(copies))
    return _Parts.apply(x, (), copies)


def cdiv(a: int, b: int) -> int:
    """triton.cdiv for host code."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """triton.next_power_of_2 for host code (n >= 1)."""
    return 1 << (n - 1).bit_length()
