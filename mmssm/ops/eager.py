"""Host time of the inference hot path (the Vim block's): when a custom op's implementation may run without the
op (skipping the dispatcher and the op's autograd and fake wrappers), and plain-Python stand-ins for Triton's
host helpers, which are jit ``ConstexprFunction`` objects costing ~2 us a call."""
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


def cdiv(a: int, b: int) -> int:
    """triton.cdiv for host code."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """triton.next_power_of_2 for host code (n >= 1)."""
    return 1 << (n - 1).bit_length()
