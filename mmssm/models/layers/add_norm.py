"""Residual add followed by a norm, fused in one Triton kernel (mmssm.ops.fused_add_norm) when the tensors are on
CUDA, in plain torch otherwise (same result up to rounding)."""
import torch
from torch import nn

from mmssm.ops import fused_add_norm as _fused

from .norm import RMSNorm


def fused_add_norm_available(tensor: torch.Tensor | None = None) -> bool:
    """Whether the fused kernel can run (on ``tensor``'s device, or on some CUDA device)."""
    if tensor is not None:
        return _fused.is_available(tensor)
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
    # the kernel computes in float32: float64 (the reference runs) stays on the torch path
    if fused and hidden.dtype != torch.float64 and isinstance(norm, (RMSNorm, nn.LayerNorm)) \
            and _fused.is_available(hidden) \
            and (isinstance(norm, RMSNorm) or len(norm.normalized_shape) == 1):
        return _fused.fused_add_norm(hidden, residual, norm.weight, getattr(norm, 'bias', None), eps=norm.eps,
                                     is_rms=isinstance(norm, RMSNorm), residual_in_fp32=residual_in_fp32)
    residual = hidden if residual is None else residual + hidden
    weight = getattr(norm, 'weight', None)
    normed = norm(residual.to(weight.dtype) if weight is not None else residual)
    if residual_in_fp32:
        residual = residual.float()
    return normed, residual
