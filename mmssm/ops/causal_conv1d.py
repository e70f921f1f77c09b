"""Depthwise causal 1-D convolution over a token sequence: Mamba's short convolution.

On CUDA tensors the ``causal_conv1d`` package is used when it is importable (it is an optional dependency,
``pip install mmssm[cuda]``); everywhere else the same function is computed with ``F.conv1d``.
"""
import torch
import torch.nn.functional as F

try:  # optional fast path
    from causal_conv1d import causal_conv1d_fn as _causal_conv1d_cuda
except ImportError:  # pragma: no cover - depends on the environment
    _causal_conv1d_cuda = None

ACTIVATIONS = (None, 'silu')


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str | None = None, reverse: bool = False) -> torch.Tensor:
    """Depthwise convolution in which step t sees steps t-K+1..t (``reverse=False``) or t..t+K-1 (``reverse=True``).

    ``reverse=True`` equals flipping the sequence, convolving causally and flipping back, which is what the
    backward direction of a bidirectional Vim block computes; here it is done without the two flips.

    Args:
        x: (batch, dim, L).
        weight: (dim, K) or (dim, 1, K), as stored by ``nn.Conv1d(dim, dim, K, groups=dim)``.
        bias: optional (dim,).
        activation: None or 'silu', applied after the convolution.
        reverse: convolve towards the end of the sequence instead of its start.

    Returns:
        (batch, dim, L), the dtype of x.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f'causal_conv1d: activation must be one of {ACTIVATIONS}, got {activation!r}.')
    if x.dim() != 3:
        raise ValueError(f'causal_conv1d: x must have shape (batch, dim, L), got {tuple(x.shape)}.')
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f'causal_conv1d: weight must have shape (dim, K) or (dim, 1, K) with dim={x.shape[1]}, '
            f'got {tuple(weight.shape)}.')
    if bias is not None and bias.shape != (x.shape[1],):
        raise ValueError(f'causal_conv1d: bias must have shape ({x.shape[1]},), got {tuple(bias.shape)}.')
    kernel = weight.shape[1]
    if (_causal_conv1d_cuda is not None and x.is_cuda and 2 <= kernel <= 4
            and x.dtype in (torch.float16, torch.bfloat16, torch.float32)):
        if reverse:
            return _causal_conv1d_cuda(x.flip(-1), weight, bias, activation=activation).flip(-1)
        return _causal_conv1d_cuda(x.contiguous(), weight, bias, activation=activation)
    if reverse:
        out = F.conv1d(F.pad(x, (0, kernel - 1)), weight.flip(-1).unsqueeze(1), bias, groups=x.shape[1])
    else:
        out = F.conv1d(F.pad(x, (kernel - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    return F.silu(out) if activation == 'silu' else out


# ---------------------------------------------------------------------------------------------------------------
# Channels-last Triton kernel: the short convolutions of a Vim block read straight from the in_proj output.

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton comes with CUDA builds of torch
    triton = None

CL_BLOCK_L = 32
CL_BLOCK_D = 64


def channels_last_available(x: torch.Tensor) -> bool:
    """Whether :func:`causal_conv1d_channels_last` runs on ``x``'s device (CUDA, or the CPU under
    TRITON_INTERPRET=1)."""
    import os
    if triton is None:
        return False
    return x.is_cuda or (os.environ.get('TRITON_INTERPRET') == '1' and x.device.type == 'cpu')


if triton is not None:

    @triton.jit
    def _conv_cl_kernel(x_ptr, w_ptr, b_ptr, out_ptr, x_sb, x_sl, w_off, b_off, reverse0, reverse1, batch_size,
                        length, dim, K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                        BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
        """out[direction, b, t, d] = act(sum_k w[d, k] x[b, t - (K-1) + k, d] + bias[d]), or x[b, t + (K-1) - k, d]
        for a reversed direction; x is read with its strides (channels contiguous), zero outside the sequence."""
        steps = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
        channels = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        direction = tl.program_id(2) // batch_size
        batch = (tl.program_id(2) % batch_size).to(tl.int64)
        reverse = tl.where(direction == 0, reverse0, reverse1)
        channel_mask = channels < dim
        acc = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        for k in tl.static_range(K):
            source = tl.where(reverse != 0, steps + (K - 1) - k, steps - (K - 1) + k)
            valid = (source >= 0) & (source < length)
            xv = tl.load(x_ptr + batch * x_sb + source[:, None].to(tl.int64) * x_sl + channels[None, :],
                         mask=valid[:, None] & channel_mask[None, :], other=0.0).to(tl.float32)
            wk = tl.load(w_ptr + direction * w_off + channels * K + k, mask=channel_mask, other=0.0).to(tl.float32)
            acc += xv * wk[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + direction * b_off + channels, mask=channel_mask, other=0.0).to(tl.float32)[None, :]
        if SILU:
            acc = acc * tl.sigmoid(acc)
        rows = (direction * batch_size + batch) * length + steps.to(tl.int64)
        tl.store(out_ptr + rows[:, None] * dim + channels[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=(steps < length)[:, None] & channel_mask[None, :])


def _element_offset(first: torch.Tensor, second: torch.Tensor) -> int:
    difference = second.data_ptr() - first.data_ptr()
    if difference % first.element_size():
        raise RuntimeError('causal_conv1d_channels_last: the two directions\' parameters are not element-aligned')
    return difference // first.element_size()


class _ConvChannelsLast(torch.autograd.Function):
    """Forward in the Triton kernel; backward by autograd through the torch function (recomputed), per
    direction."""

    @staticmethod
    def forward(ctx, x, silu, reverses, *params):
        weights, biases = params[0::2], params[1::2]
        batch, length, dim = x.shape
        directions = len(weights)
        kernel = weights[0].shape[-1]
        out = torch.empty((directions, batch, length, dim), device=x.device, dtype=x.dtype)
        has_bias = biases[0] is not None
        w_off = _element_offset(weights[0], weights[-1])
        b_off = _element_offset(biases[0], biases[-1]) if has_bias else 0
        grid = (triton.cdiv(length, CL_BLOCK_L), triton.cdiv(dim, CL_BLOCK_D), directions * batch)
        _conv_cl_kernel[grid](x, weights[0], biases[0] if has_bias else weights[0], out, x.stride(0), x.stride(1),
                              w_off, b_off, int(reverses[0]), int(reverses[-1]), batch, length, dim, K=kernel,
                              HAS_BIAS=has_bias, SILU=silu, BLOCK_L=CL_BLOCK_L, BLOCK_D=CL_BLOCK_D)
        ctx.save_for_backward(x, *[p for p in params if p is not None])
        ctx.meta = (silu, reverses, has_bias, directions)
        return out

    @staticmethod
    def backward(ctx, dout):
        silu, reverses, has_bias, directions = ctx.meta
        x, *params = ctx.saved_tensors
        per = 2 if has_bias else 1
        grads, dx = [], None
        with torch.enable_grad():
            xt = x.detach().transpose(1, 2).requires_grad_()
            for d in range(directions):
                weight = params[d * per].detach().requires_grad_()
                bias = params[d * per + 1].detach().requires_grad_() if has_bias else None
                out = causal_conv1d(xt, weight, bias, activation='silu' if silu else None, reverse=reverses[d])
                inputs = [xt, weight] + ([bias] if has_bias else [])
                g = torch.autograd.grad(out, inputs, dout[d].transpose(1, 2))
                dx = g[0] if dx is None else dx + g[0]
                grads += [g[1], g[2] if has_bias else None]
        return (dx.transpose(1, 2), None, None, *grads)


def causal_conv1d_channels_last(x: torch.Tensor, weights, biases, reverses, activation: str | None = None):
    """:func:`causal_conv1d` of one or two directions at once on channels-last tokens, without layout copies.

    Args:
        x: (batch, L, dim) with contiguous channels (e.g. the x half of a Linear's output); any other strides.
        weights, biases: one per direction, (dim, K) or (dim, 1, K), and (dim,) or None (all or none); the two
            directions' tensors of one dtype.
        reverses: one bool per direction (see :func:`causal_conv1d`).
        activation: None or 'silu'.

    Returns:
        (directions, batch, L, dim), contiguous, x's dtype. Computed in float32 by a Triton kernel (CUDA, or the
        CPU under TRITON_INTERPRET=1); the backward recomputes the torch function.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f'causal_conv1d_channels_last: activation must be one of {ACTIVATIONS}, got {activation!r}.')
    if not channels_last_available(x):
        raise RuntimeError(f'causal_conv1d_channels_last runs on CUDA tensors with triton installed, got a '
                           f'{x.device} tensor; use causal_conv1d there.')
    if x.dim() != 3 or x.stride(-1) != 1:
        raise ValueError(f'causal_conv1d_channels_last: x must be (batch, L, dim) with contiguous channels, got '
                         f'shape {tuple(x.shape)} strides {x.stride()}.')
    weights = [w.squeeze(1) if w.dim() == 3 else w for w in weights]
    if not 1 <= len(weights) <= 2 or len(biases) != len(weights) or len(reverses) != len(weights):
        raise ValueError('causal_conv1d_channels_last: one or two directions, one weight, bias and reverse each.')
    if any(w.shape != (x.shape[-1], weights[0].shape[-1]) or w.dtype != weights[0].dtype for w in weights):
        raise ValueError(f'causal_conv1d_channels_last: weights must be (dim, K) with dim={x.shape[-1]}, one shape '
                         f'and dtype, got {[tuple(w.shape) for w in weights]}.')
    if (biases[0] is None) != (biases[-1] is None):
        raise ValueError('causal_conv1d_channels_last: give a bias to both directions or to neither.')
    params = []
    for w, b in zip(weights, biases):
        params += [w.contiguous(), b]
    return _ConvChannelsLast.apply(x, activation == 'silu', tuple(bool(r) for r in reverses), *params)
