"""Host time of the inference hot path (the Vim block's): when a custom op's implementation may run without the
op (skipping the dispatcher and the op's autograd and fake wrappers), and plain-Python stand-ins for Triton's
host helpers, which are jit ``ConstexprFunction`` objects costing ~2 us a call."""
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode


def direct_call(tensors) -> bool:
    """True when nothing needs the op boundary: no gradient flows to ``tensors``, nothing is compiling or tracing,
    and no dispatch mode (FLOP counters, op recorders) is watching. ``tensors``: any iterable, read only with
    autograd on (so a module's ``parameters()`` cost nothing in inference)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return eager_autograd()


def eager_autograd() -> bool:
    """True when a custom op's autograd may run as a plain ``torch.autograd.Function`` (nothing is compiling or
    tracing, and no dispatch mode is watching): the op boundary only costs host time there."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing() or _get_current_dispatch_mode() is not None)


def cdiv(a: int, b: int) -> int:
    """triton.cdiv for host code."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """triton.next_power_of_2 for host code (n >= 1)."""
    return 1 << (n - 1).bit_length()
