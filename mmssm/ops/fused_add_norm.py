"""Residual add + RMSNorm / LayerNorm in one Triton kernel, forward and backward (the pre-norm step of every Vim
block: ``residual = hidden + residual; out = norm(residual)``).

One program normalizes one row (all channels in registers) in float32. The backward recomputes the statistics from
the saved residual, so nothing but the residual is kept; the weight and bias gradients are summed per program over
a block of rows and the partial sums added in torch. The torch composition in ``add_norm_reference`` is the
reference the kernels are tested against.
"""
import os

import torch

from .eager import cdiv, direct_call, next_power_of_2
from .launch import fast_launch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton comes with CUDA builds of torch
    triton = None

# rows per backward program: the weight-gradient partial sums are (programs, C) float32
BWD_ROWS = 32
MAX_CHANNELS = 65536


def _interpreting() -> bool:
    # TRITON_INTERPRET=1 runs the kernels on CPU tensors through Triton's interpreter (tests on machines without GPU)
    return triton is not None and os.environ.get('TRITON_INTERPRET') == '1'


def is_available(tensor: torch.Tensor) -> bool:
    """Whether the kernels can run on ``tensor``'s device."""
    if triton is None:
        return False
    return tensor.is_cuda or (_interpreting() and tensor.device.type == 'cpu')


def add_norm_reference(hidden, residual, weight, bias, eps, is_rms, residual_in_fp32, out_dtype=None):
    """The same function in torch (statistics in float32): ``(out, residual)``."""
    res = hidden if residual is None else residual + hidden
    if residual_in_fp32:
        res = res.float()
    x = res.float()
    if not is_rms:
        x = x - x.mean(-1, keepdim=True)
    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        out = out * weight.float()
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype or (weight.dtype if weight is not None else hidden.dtype)), res


if triton is not None:

    @fast_launch
    @triton.jit
    def _add_norm_fwd_kernel(x_ptr, res_ptr, w_ptr, b_ptr, out_ptr, res_out_ptr, cols, eps,
                             HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, IS_RMS: tl.constexpr,
                             BLOCK_C: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        offsets = tl.arange(0, BLOCK_C)
        mask = offsets < cols
        base = row * cols + offsets
        x = tl.load(x_ptr + base, mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            x += tl.load(res_ptr + base, mask=mask, other=0.0).to(tl.float32)
        # the norm reads the residual as stored (rounded to its dtype), as the unfused composition does
        x = x.to(res_out_ptr.dtype.element_ty)
        tl.store(res_out_ptr + base, x, mask=mask)
        x = x.to(tl.float32)
        if not IS_RMS:
            x = tl.where(mask, x - tl.sum(x, axis=0) / cols, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / cols + eps)
        y = x * rstd
        if HAS_W:
            y = y * tl.load(w_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if HAS_B:
            y = y + tl.load(b_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + base, y.to(out_ptr.dtype.element_ty), mask=mask)

    @fast_launch
    @triton.jit
    def _add_norm_bwd_kernel(res_out_ptr, w_ptr, dout_ptr, dres_out_ptr, dx_ptr, dres_ptr, dw_ptr, db_ptr,
                             rows, cols, eps, HAS_DRES_OUT: tl.constexpr, HAS_RES: tl.constexpr,
                             HAS_W: tl.constexpr, HAS_B: tl.constexpr, IS_RMS: tl.constexpr,
                             ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
        program = tl.program_id(0).to(tl.int64)
        offsets = tl.arange(0, BLOCK_C)
        mask = offsets < cols
        w = tl.zeros([BLOCK_C], dtype=tl.float32) + 1.0
        if HAS_W:
            w = tl.load(w_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK_C], dtype=tl.float32)
        db = tl.zeros([BLOCK_C], dtype=tl.float32)
        first = program * ROWS
        for r in range(0, ROWS):
            row = first + r
            if row < rows:
                base = row * cols + offsets
                x = tl.load(res_out_ptr + base, mask=mask, other=0.0).to(tl.float32)
                if not IS_RMS:
                    x = tl.where(mask, x - tl.sum(x, axis=0) / cols, 0.0)
                rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / cols + eps)
                xhat = x * rstd
                dy = tl.load(dout_ptr + base, mask=mask, other=0.0).to(tl.float32)
                dw += dy * xhat
                db += dy
                g = dy * w
                # d xhat -> d x: rstd (g - xhat mean(g xhat)), and for LayerNorm minus mean(g)
                dx = g - xhat * (tl.sum(g * xhat, axis=0) / cols)
                if not IS_RMS:
                    dx = dx - tl.sum(g, axis=0) / cols
                dx = tl.where(mask, dx * rstd, 0.0)
                if HAS_DRES_OUT:
                    dx += tl.load(dres_out_ptr + base, mask=mask, other=0.0).to(tl.float32)
                tl.store(dx_ptr + base, dx.to(dx_ptr.dtype.element_ty), mask=mask)
                if HAS_RES:
                    tl.store(dres_ptr + base, dx.to(dres_ptr.dtype.element_ty), mask=mask)
        if HAS_W:
            tl.store(dw_ptr + program * cols + offsets, dw, mask=mask)
        if HAS_B:
            tl.store(db_ptr + program * cols + offsets, db, mask=mask)


def _block_c(cols: int) -> int:
    return max(16, next_power_of_2(cols))


def _warps(block_c: int) -> int:
    return min(16, max(1, block_c // 256))


def _forward(hidden, residual, weight, bias, eps, is_rms, residual_in_fp32, out_dtype):
    """The kernel launch: (out, new residual) as (rows, C) tensors."""
    cols = hidden.shape[-1]
    x = hidden.reshape(-1, cols).contiguous()
    res = residual.reshape(-1, cols).contiguous() if residual is not None else None
    res_dtype = torch.float32 if residual_in_fp32 else (
        torch.promote_types(hidden.dtype, residual.dtype) if residual is not None else hidden.dtype)
    res_out = torch.empty(x.shape, device=x.device, dtype=res_dtype)
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    block_c = _block_c(cols)
    _add_norm_fwd_kernel[(x.shape[0],)](
        x, res if res is not None else x, weight if weight is not None else x, bias if bias is not None else x,
        out, res_out, cols, eps, HAS_RES=res is not None, HAS_W=weight is not None, HAS_B=bias is not None,
        IS_RMS=is_rms, BLOCK_C=block_c, num_warps=_warps(block_c))
    return out, res_out


class _AddNorm(torch.autograd.Function):

    @staticmethod
    def forward(ctx, hidden, residual, weight, bias, eps, is_rms, residual_in_fp32, out_dtype):
        shape = hidden.shape
        out, res_out = _forward(hidden, residual, weight, bias, eps, is_rms, residual_in_fp32, out_dtype)
        ctx.save_for_backward(res_out, weight, bias)
        ctx.meta = (eps, is_rms, hidden.dtype, residual.dtype if residual is not None else None, shape)
        return out.reshape(shape), res_out.reshape(shape)

    @staticmethod
    def backward(ctx, dout, dres_out):
        res_out, weight, bias = ctx.saved_tensors
        eps, is_rms, x_dtype, res_dtype, shape = ctx.meta
        rows, cols = res_out.shape
        dout = (dout if dout is not None else torch.zeros(shape, device=res_out.device)).reshape(rows, cols)
        dout = dout.contiguous()
        if dres_out is not None:
            dres_out = dres_out.reshape(rows, cols).contiguous()
        dx = torch.empty((rows, cols), device=res_out.device, dtype=x_dtype)
        dres = torch.empty((rows, cols), device=res_out.device, dtype=res_dtype) if res_dtype is not None else dx
        programs = cdiv(rows, BWD_ROWS)
        dw = torch.empty((programs, cols), device=res_out.device, dtype=torch.float32) if weight is not None else dx
        db = torch.empty((programs, cols), device=res_out.device, dtype=torch.float32) if bias is not None else dx
        block_c = _block_c(cols)
        _add_norm_bwd_kernel[(programs,)](
            res_out, weight if weight is not None else res_out, dout, dres_out if dres_out is not None else dout,
            dx, dres, dw, db, rows, cols, eps, HAS_DRES_OUT=dres_out is not None, HAS_RES=res_dtype is not None,
            HAS_W=weight is not None, HAS_B=bias is not None, IS_RMS=is_rms, ROWS=BWD_ROWS, BLOCK_C=block_c,
            num_warps=_warps(block_c))
        dweight = dw.sum(0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        dbias = db.sum(0).to(bias.dtype) if bias is not None and ctx.needs_input_grad[3] else None
        return (dx.reshape(shape), dres.reshape(shape) if res_dtype is not None else None, dweight, dbias,
                None, None, None, None)


def fused_add_norm(hidden: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor | None,
                   bias: torch.Tensor | None = None, eps: float = 1e-5, is_rms: bool = True,
                   residual_in_fp32: bool = False, out_dtype: torch.dtype | None = None):
    """``residual = hidden + residual`` (``hidden`` when residual is None), then RMSNorm (``is_rms``) or LayerNorm
    of it over the last dimension, in one kernel, with autograd.

    Args:
        hidden, residual: (..., C) of one shape; residual may be None.
        weight, bias: (C,) or None.
        residual_in_fp32: store the new residual in float32 (else in the promoted dtype of the two inputs).
        out_dtype: dtype of the normalized output (default: the weight's, else hidden's).

    Returns:
        (normalized, new residual)
    """
    if not is_available(hidden):
        raise RuntimeError(f'fused_add_norm runs on CUDA tensors with triton installed, got a {hidden.device} '
                           'tensor; use mmssm.ops.fused_add_norm.add_norm_reference (the torch composition) there.')
    cols = hidden.shape[-1]
    if torch.float64 in (hidden.dtype, getattr(residual, 'dtype', None)):
        raise ValueError('fused_add_norm computes in float32 and got float64 input; use add_norm_reference for '
                         'float64.')
    if residual is not None and residual.shape != hidden.shape:
        raise ValueError(f'fused_add_norm: residual shape {tuple(residual.shape)} differs from hidden '
                         f'{tuple(hidden.shape)}.')
    for name, param in (('weight', weight), ('bias', bias)):
        if param is not None and tuple(param.shape) != (cols,):
            raise ValueError(f'fused_add_norm: {name} must have shape ({cols},), got {tuple(param.shape)}.')
    if cols > MAX_CHANNELS:
        raise ValueError(f'fused_add_norm: at most {MAX_CHANNELS} channels in one row, got {cols}; use '
                         'add_norm_reference.')
    out_dtype = out_dtype or (weight.dtype if weight is not None else hidden.dtype)
    if direct_call([t for t in (hidden, residual, weight, bias) if t is not None]):  # inference: no Function
        out, res_out = _forward(hidden, residual, weight, bias, float(eps), bool(is_rms), bool(residual_in_fp32),
                                out_dtype)
        return out.reshape(hidden.shape), res_out.reshape(hidden.shape)
    return _AddNorm.apply(hidden, residual, weight, bias, float(eps), bool(is_rms), bool(residual_in_fp32),
                          out_dtype)
