"""Residual add followed by a norm, fused with mamba-ssm's Triton kernel when it is importable and the tensors
are on CUDA, in plain torch otherwise (same result up to rounding)."""
import torch
from torch import nn

from .norm import RMSNorm

try:  # optional: mamba-ssm >= 2 names the module layer_norm, 1.x layernorm
    try:
        from mamba_ssm.ops.triton.layer_norm import layer_norm_fn, rms_norm_fn
    except ImportError:
        from mamba_ssm.ops.triton.layernorm import layer_norm_fn, rms_norm_fn
except Exception:  # pragma: no cover - depends on the environment (import of mamba_ssm may fail in many ways)
    layer_norm_fn = rms_norm_fn = None


def fused_add_norm_available() -> bool:
    return rms_norm_fn is not None


def add_norm(hidden: torch.Tensor, residual: torch.Tensor | None, norm: nn.Module, residual_in_fp32: bool,
             fused: bool = False):
    """``residual = residual + hidden`` (or ``hidden`` when residual is None), then ``norm(residual)``.

    Args:
        hidden: (..., C) new branch output (drop path already applied).
        residual: (..., C) running residual stream, or None before the first block.
        norm: an ``RMSNorm`` or ``nn.LayerNorm`` over C.
        residual_in_fp32: keep the residual stream in float32 (Mamba's ``residual_in_fp32``).
        fused: use mamba-ssm's fused Triton kernel if it is importable and the input is on CUDA.

    Returns:
        (normed in the norm weight's dtype, new residual)
    """
    if fused and rms_norm_fn is not None and hidden.is_cuda and isinstance(norm, (RMSNorm, nn.LayerNorm)):
        fn = rms_norm_fn if isinstance(norm, RMSNorm) else layer_norm_fn
        return fn(hidden, norm.weight, getattr(norm, 'bias', None), residual=residual, prenorm=True,
                  residual_in_fp32=residual_in_fp32, eps=norm.eps)
    residual = hidden if residual is None else residual + hidden
    weight = getattr(norm, 'weight', None)
    normed = norm(residual.to(weight.dtype) if weight is not None else residual)
    if residual_in_fp32:
        residual = residual.float()
    return normed, residual
