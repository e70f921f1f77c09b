"""Residual add followed by a norm, fused in one Triton kernel (mmssm.ops.fused_add_norm) when the tensors are on
CUDA, in plain torch otherwise (same result up to rounding)."""
import torch
from torch import nn

from mmssm.ops import fused_add_norm as _fused

from .norm import RMSNorm


def fused_add_norm_available() -> bool:
    """Whether the fused kernel can run on this machine's CUDA device."""
    return _fused.triton is not None and torch.cuda.is_available()


def add_norm(hidden: torch.Tensor, residual: torch.Tensor | None, norm: nn.Module, residual_in_fp32: bool,
             fused: bool = False):
    """``residual = residual + hidden`` (or ``hidden`` when residual is None), then ``norm(residual)``.

    Args:
        hidden: (..., C) new branch output (drop path already applied).
        residual: (..., C) running residual stream, or None before the first block.
        norm: an ``RMSNorm`` or ``nn.LayerNorm`` over C.
        residual_in_fp32: keep the residual stream in float32 (Mamba's ``residual_in_fp32``).
        fused: use the fused Triton kernel when the input is on CUDA (and triton is installed).

    Returns:
        (normed in the norm weight's dtype, new residual)
    """
    # the kernel computes in float32: float64 (the reference runs) stays on the torch path; so does a jit trace
    # (FLOP counting), which would hand the kernel traced shapes, and torch.compile, which fuses the torch ops itself
    one_dim = isinstance(norm, RMSNorm) or (isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1)
    if fused and one_dim and hidden.dtype != torch.float64 and _fused.is_available(hidden) \
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
        return _fused.fused_add_norm(hidden, residual, norm.weight, getattr(norm, 'bias', None), eps=norm.eps,
                                     is_rms=isinstance(norm, RMSNorm), residual_in_fp32=residual_in_fp32)
    residual = hidden if residual is None else residual + hidden
    weight = getattr(norm, 'weight', None)
    normed = norm(residual.to(weight.dtype) if weight is not None else residual)
    if residual_in_fp32:
        residual = residual.float()
    return normed, residual
