"""When a custom op's implementation may run without the op: skipping the dispatcher and the op's autograd and
fake wrappers saves host time on every call of an inference pass (the Vim block's hot path)."""
import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode


def direct_call(tensors) -> bool:
    """True when nothing needs the op boundary: no gradient flows to ``tensors``, nothing is compiling or tracing,
    and no dispatch mode (FLOP counters, op recorders) is watching."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing() or _get_current_dispatch_mode() is not None)
