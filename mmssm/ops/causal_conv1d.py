"""Depthwise causal 1-D convolution over a token sequence: Mamba's short convolution.

On CUDA tensors the ``causal_conv1d`` package is used when it is importable (it is an optional dependency,
``pip install mmssm[cuda]``); everywhere else the same function is computed with ``F.conv1d``.
"""
import torch
import torch.nn.functional as F

from .eager import cdiv, next_power_of_2, op_route
from .launch import fast_launch

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
# Channels-last Triton kernel: the short convolutions of a Vim or MambaVision mixer read straight from the in_proj
# output and write the layout x_proj reads.

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton comes with CUDA builds of torch
    triton = None

CL_BLOCK_L = 32
CL_BLOCK_D = 64
# the conv backward's weight-gradient kernel splits the sequence into segments below this many programs
CL_BWD_PROGRAMS = 1024
PADDINGS = ('causal', 'reverse', 'same')


def channels_last_available(x: torch.Tensor) -> bool:
    """Whether :func:`conv1d_channels_last` runs on ``x``'s device (CUDA, or the CPU under TRITON_INTERPRET=1)."""
    import os
    if triton is None:
        return False
    return x.is_cuda or (os.environ.get('TRITON_INTERPRET') == '1' and x.device.type == 'cpu')


def conv1d_reference(x: torch.Tensor, weight: torch.Tensor, bias, padding: str, activation: str | None):
    """The depthwise convolution of :func:`conv1d_channels_last` in torch, on (batch, dim, L)."""
    if padding == 'same':
        weight = weight if weight.dim() == 3 else weight.unsqueeze(1)
        out = F.conv1d(x, weight, bias, padding='same', groups=x.shape[1])
        return F.silu(out) if activation == 'silu' else out
    return causal_conv1d(x, weight, bias, activation=activation, reverse=padding == 'reverse')


if triton is not None:

    @triton.jit
    def _tile(batch_size, dim, mode0, mode1, K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
        """A program's steps and channels, direction, batch element, padding mode and left padding."""
        steps = tl.program_id(0) * BLOCK_L + tl.arange(0, BLOCK_L)
        channels = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        direction = tl.program_id(2) // batch_size
        batch = (tl.program_id(2) % batch_size).to(tl.int64)
        mode = tl.where(direction == 0, mode0, mode1)
        left = tl.where(mode == 0, K - 1, (K - 1) // 2)
        return steps, channels, channels < dim, direction, batch, mode, left

    @triton.jit
    def _tap_input(x_rows, x_sl, steps, channels, channel_mask, mode, left, length, k: tl.constexpr,
                   K: tl.constexpr):
        """x at the step tap k of each output step reads (mode 0 causal: t - (K-1) + k; 1 reversed: t + (K-1) - k;
        2 'same': t + k - left), float32, zero outside the sequence."""
        source = tl.where(mode == 1, steps + (K - 1) - k, steps + k - left)
        valid = (source >= 0) & (source < length)
        return tl.load(x_rows + source[:, None].to(tl.int64) * x_sl + channels[None, :],
                       mask=valid[:, None] & channel_mask[None, :], other=0.0).to(tl.float32)

    @triton.jit
    def _tap_weight(w_rows, channels, channel_mask, k: tl.constexpr, K: tl.constexpr):
        """w[:, k] of the program's channels as a (1, BLOCK_D) row, float32."""
        return tl.load(w_rows + channels * K + k, mask=channel_mask, other=0.0).to(tl.float32)[None, :]

    @triton.jit
    def _pre_activation(x_rows, x_sl, w_rows, b_rows, steps, channels, channel_mask, mode, left, length,
                        K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
        acc = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        for k in tl.static_range(K):
            acc += _tap_input(x_rows, x_sl, steps, channels, channel_mask, mode, left, length, k, K) \
                * _tap_weight(w_rows, channels, channel_mask, k, K)
        if HAS_BIAS:
            acc += tl.load(b_rows + channels, mask=channel_mask, other=0.0).to(tl.float32)[None, :]
        return acc

    @fast_launch
    @triton.jit
    def _conv_cl_kernel(x_ptr, w_ptr, b_ptr, out_ptr, x_off, x_sb, x_sl, w_off, b_off, mode0, mode1, batch_size,
                        length, dim, K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                        BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
        """out[direction, b, t, d] = act(bias[d] + sum_k w[d, k] x[b, s(t, k), d]) with s = t - (K-1) + k (mode 0,
        causal), t + (K-1) - k (1, reversed) or t + k - (K-1) // 2 (2, 'same'); x read with its strides (channels
        contiguous; a direction's input x_off elements on), zero outside the sequence."""
        steps, channels, channel_mask, direction, batch, mode, left = _tile(batch_size, dim, mode0, mode1, K,
                                                                             BLOCK_L, BLOCK_D)
        acc = _pre_activation(x_ptr + direction * x_off + batch * x_sb, x_sl, w_ptr + direction * w_off,
                              b_ptr + direction * b_off, steps, channels, channel_mask, mode, left, length, K,
                              HAS_BIAS, BLOCK_L, BLOCK_D)
        if SILU:
            acc = acc * tl.sigmoid(acc)
        rows = (direction * batch_size + batch) * length + steps.to(tl.int64)
        tl.store(out_ptr + rows[:, None] * dim + channels[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=(steps < length)[:, None] & channel_mask[None, :])


if triton is not None:

    @fast_launch
    @triton.jit
    def _conv_cl_bwd_kernel(x_ptr, w_ptr, b_ptr, dout_ptr, gpre_ptr, part_ptr, x_off, x_sb, x_sl, w_off, b_off,
                            mode0, mode1, batch_size, length, dim, seg_len, K: tl.constexpr, K_PAD: tl.constexpr,
                            HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_L: tl.constexpr,
                            BLOCK_D: tl.constexpr):
        """The gradient before the activation, gpre = dout * SiLU'(pre) (pre recomputed as the forward does), into
        a float32 (directions, batch, L, dim) buffer, and its sums over the sequence: a program walks one segment
        (program_id(0); seg_len steps, a multiple of BLOCK_L) of one sample's steps for its channels and stores the
        sums of g * x per tap k < K and of g (slot K) into part_ptr, (directions, batch, segments, dim, K_PAD)
        float32, which are summed over the batch and the segments after the kernel (no atomics: deterministic, and
        no contention on the few dim x K addresses)."""
        _steps, channels, channel_mask, direction, batch, mode, left = _tile(batch_size, dim, mode0, mode1, K,
                                                                              BLOCK_L, BLOCK_D)
        x_rows = x_ptr + direction * x_off + batch * x_sb
        w_rows = w_ptr + direction * w_off
        base = (direction * batch_size + batch) * length
        taps = tl.arange(0, K_PAD)
        sums = tl.zeros([BLOCK_D, K_PAD], dtype=tl.float32)  # per channel: sum g x_k (k < K), sum g (k = K)
        # K <= 4: the products summed elementwise over the segment's tiles, and over the steps once at the end (a
        # sum over a tile's steps crosses the threads); each tap's input is loaded once for pre and the sums
        acc0 = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        acc1 = acc0
        acc2 = acc0
        acc3 = acc0
        acc_g = acc0
        segment = tl.program_id(0)
        for start in range(segment * seg_len, tl.minimum(segment * seg_len + seg_len, length), BLOCK_L):
            steps = tl.arange(0, BLOCK_L) + start
            step_mask = steps < length
            tile = (base + steps.to(tl.int64))[:, None] * dim + channels[None, :]
            tile_mask = step_mask[:, None] & channel_mask[None, :]
            g = tl.load(dout_ptr + tile, mask=tile_mask, other=0.0).to(tl.float32)
            if K <= 4:
                x0 = _tap_input(x_rows, x_sl, steps, channels, channel_mask, mode, left, length, 0, K)
                x1 = x0
                x2 = x0
                x3 = x0
                if K > 1:
                    x1 = _tap_input(x_rows, x_sl, steps, channels, channel_mask, mode, left, length, 1, K)
                if K > 2:
                    x2 = _tap_input(x_rows, x_sl, steps, channels, channel_mask, mode, left, length, 2, K)
                if K > 3:
                    x3 = _tap_input(x_rows, x_sl, steps, channels, channel_mask, mode, left, length, 3, K)
                if SILU:
                    pre = _tap_weight(w_rows, channels, channel_mask, 0, K) * x0
                    if K > 1:
                        pre += _tap_weight(w_rows, channels, channel_mask, 1, K) * x1
                    if K > 2:
                        pre += _tap_weight(w_rows, channels, channel_mask, 2, K) * x2
                    if K > 3:
                        pre += _tap_weight(w_rows, channels, channel_mask, 3, K) * x3
                    if HAS_BIAS:
                        pre += tl.load(b_ptr + direction * b_off + channels, mask=channel_mask,
                                       other=0.0).to(tl.float32)[None, :]
            elif SILU:  # (any K: the taps loaded again for the sums below)
                pre = _pre_activation(x_rows, x_sl, w_rows, b_ptr + direction * b_off, steps, channels,
                                      channel_mask, mode, left, length, K, HAS_BIAS, BLOCK_L, BLOCK_D)
            if SILU:
                sig = tl.sigmoid(pre)
                g = g * sig * (1.0 + pre * (1.0 - sig))
            g = tl.where(tile_mask, g, 0.0)
            tl.store(gpre_ptr + tile, g, mask=tile_mask)
            if K <= 4:
                acc0 += g * x0
                acc1 += g * x1
                acc2 += g * x2
                acc3 += g * x3
                acc_g += g
            else:  # a sum over the tile's steps per tap
                for k in tl.static_range(K):
                    xv = _tap_input(x_rows, x_sl, steps, channels, channel_mask, mode, left, length, k, K)
                    sums += tl.where(taps[None, :] == k, tl.sum(g * xv, axis=0)[:, None], 0.0)
                sums += tl.where(taps[None, :] == K, tl.sum(g, axis=0)[:, None], 0.0)
        if K <= 4:
            sums = tl.where(taps[None, :] == 0, tl.sum(acc0, axis=0)[:, None], 0.0)
            if K > 1:
                sums += tl.where(taps[None, :] == 1, tl.sum(acc1, axis=0)[:, None], 0.0)
            if K > 2:
                sums += tl.where(taps[None, :] == 2, tl.sum(acc2, axis=0)[:, None], 0.0)
            if K > 3:
                sums += tl.where(taps[None, :] == 3, tl.sum(acc3, axis=0)[:, None], 0.0)
            sums += tl.where(taps[None, :] == K, tl.sum(acc_g, axis=0)[:, None], 0.0)
        rows = ((direction * batch_size + batch) * tl.num_programs(0) + segment) * dim + channels
        tl.store(part_ptr + rows[:, None] * K_PAD + taps[None, :], sums,
                 mask=channel_mask[:, None] & (taps[None, :] <= K))

    @fast_launch
    @triton.jit
    def _conv_cl_dx_kernel(gpre_ptr, w_ptr, dx_ptr, w_off, mode0, mode1, batch_size, length, dim,
                           K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
        """dx[direction, b, s, d] = sum_k w[d, k] gpre[direction, b, t, d] over the steps t whose tap k read s."""
        steps, channels, channel_mask, direction, batch, mode, left = _tile(batch_size, dim, mode0, mode1, K,
                                                                             BLOCK_L, BLOCK_D)
        base = (direction * batch_size + batch) * length
        acc = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
        for k in tl.static_range(K):
            reader = tl.where(mode == 1, steps - (K - 1) + k, steps - k + left)  # the step t with source(t, k) = s
            valid = (reader >= 0) & (reader < length)
            gv = tl.load(gpre_ptr + (base + reader[:, None].to(tl.int64)) * dim + channels[None, :],
                         mask=valid[:, None] & channel_mask[None, :], other=0.0)
            wk = tl.load(w_ptr + direction * w_off + channels * K + k, mask=channel_mask, other=0.0).to(tl.float32)
            acc += gv * wk[None, :]
        tl.store(dx_ptr + (base + steps[:, None].to(tl.int64)) * dim + channels[None, :],
                 acc.to(dx_ptr.dtype.element_ty), mask=(steps < length)[:, None] & channel_mask[None, :])


def _element_offset(first: torch.Tensor, second: torch.Tensor) -> int:
    difference = second.data_ptr() - first.data_ptr()
    if difference % first.element_size():
        raise RuntimeError('conv1d_channels_last: the two directions\' tensors are not element-aligned')
    return difference // first.element_size()


def _conv_cl_forward(inputs: list[torch.Tensor], weights: list[torch.Tensor], biases: list[torch.Tensor],
                modes: list[int], silu: bool) -> torch.Tensor:
    """(directions, batch, L, dim) from the Triton kernel; weights (dim, K) contiguous, biases empty for none."""
    directions = len(inputs)
    batch, length, dim = inputs[0].shape
    out = torch.empty((directions, batch, length, dim), device=inputs[0].device, dtype=inputs[0].dtype)
    has_bias = len(biases) > 0
    grid = (cdiv(length, CL_BLOCK_L), cdiv(dim, CL_BLOCK_D), directions * batch)
    _conv_cl_kernel[grid](
        inputs[0], weights[0], biases[0] if has_bias else weights[0], out, _element_offset(inputs[0], inputs[-1]),
        inputs[0].stride(0), inputs[0].stride(1), _element_offset(weights[0], weights[-1]),
        _element_offset(biases[0], biases[-1]) if has_bias else 0, modes[0], modes[-1], batch, length, dim,
        K=weights[0].shape[-1], HAS_BIAS=has_bias, SILU=silu, BLOCK_L=CL_BLOCK_L, BLOCK_D=CL_BLOCK_D)
    return out


_conv_cl_op = torch.library.custom_op('mmssm::conv1d_channels_last', _conv_cl_forward, mutates_args=())


@_conv_cl_op.register_fake
def _(inputs, weights, biases, modes, silu):
    return inputs[0].new_empty((len(inputs),) + tuple(inputs[0].shape))


def _conv_cl_setup(ctx, inputs, output):
    xs, weights, biases, modes, silu = inputs
    ctx.directions, ctx.has_bias, ctx.modes, ctx.silu = len(xs), len(biases) > 0, modes, silu
    ctx.save_for_backward(*xs, *weights, *biases)


def _conv_cl_bwd(dout: torch.Tensor, inputs: list[torch.Tensor], weights: list[torch.Tensor],
                 biases: list[torch.Tensor], modes: list[int], silu: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """(dx (directions, batch, L, dim) in the inputs' dtype, dw (directions, dim, K) and db (directions, dim)
    float32) of :func:`_conv_cl_op`, in two Triton kernels."""
    directions = len(inputs)
    batch, length, dim = inputs[0].shape
    kernel = weights[0].shape[-1]
    device = inputs[0].device
    dout = dout.contiguous()
    has_bias = len(biases) > 0
    gpre = torch.empty((directions, batch, length, dim), device=device, dtype=torch.float32)
    dx = torch.empty((directions, batch, length, dim), device=device, dtype=inputs[0].dtype)
    k_pad = next_power_of_2(kernel + 1)
    # segments of the sequence in parallel when (directions, samples, channel blocks) alone give few programs
    tiles = cdiv(length, CL_BLOCK_L)
    segments = min(tiles, cdiv(CL_BWD_PROGRAMS, directions * batch * cdiv(dim, CL_BLOCK_D)))
    seg_len = cdiv(tiles, segments) * CL_BLOCK_L
    segments = cdiv(length, seg_len)
    part = torch.empty((directions, batch, segments, dim, k_pad), device=device, dtype=torch.float32)
    w_off = _element_offset(weights[0], weights[-1])
    _conv_cl_bwd_kernel[(segments, cdiv(dim, CL_BLOCK_D), directions * batch)](
        inputs[0], weights[0], biases[0] if has_bias else weights[0], dout, gpre, part,
        _element_offset(inputs[0], inputs[-1]), inputs[0].stride(0), inputs[0].stride(1), w_off,
        _element_offset(biases[0], biases[-1]) if has_bias else 0, modes[0], modes[-1], batch, length, dim, seg_len,
        K=kernel, K_PAD=k_pad, HAS_BIAS=has_bias, SILU=silu, BLOCK_L=CL_BLOCK_L, BLOCK_D=CL_BLOCK_D)
    # two sums, not views of one: a custom op's outputs may not alias each other
    dw, db = part[..., :kernel].sum((1, 2)), part[..., kernel].sum((1, 2))
    grid = (cdiv(length, CL_BLOCK_L), cdiv(dim, CL_BLOCK_D), directions * batch)
    _conv_cl_dx_kernel[grid](gpre, weights[0], dx, w_off, modes[0], modes[-1], batch, length, dim, K=kernel,
                             BLOCK_L=CL_BLOCK_L, BLOCK_D=CL_BLOCK_D)
    return dx, dw, db


_conv_cl_bwd_op = torch.library.custom_op('mmssm::conv1d_channels_last_bwd', _conv_cl_bwd, mutates_args=())


@_conv_cl_bwd_op.register_fake
def _(dout, inputs, weights, biases, modes, silu):
    directions, (dim, kernel) = len(inputs), weights[0].shape
    return (inputs[0].new_empty((directions,) + tuple(inputs[0].shape)),
            inputs[0].new_empty((directions, dim, kernel), dtype=torch.float32),
            inputs[0].new_empty((directions, dim), dtype=torch.float32))


def _conv_cl_grads(ctx, dout, bwd=_conv_cl_bwd_op):
    """The gradients of the inputs, weights and biases (lists) from ``ctx`` as :func:`_conv_cl_setup` fills it."""
    n = ctx.directions
    saved = ctx.saved_tensors
    xs, weights, biases = list(saved[:n]), list(saved[n:2 * n]), list(saved[2 * n:])
    dx, dw, db = bwd(dout, xs, weights, biases, ctx.modes, ctx.silu)
    dxs = list(dx.unbind(0))  # each direction's input gets its own (autograd sums a shared one)
    dws = [g.to(w.dtype) for g, w in zip(dw.unbind(0), weights)]
    dbs = [g.to(b.dtype) for g, b in zip(db.unbind(0), biases)] if ctx.has_bias else []
    return dxs, dws, dbs


def _conv_cl_backward(ctx, dout):
    return *_conv_cl_grads(ctx, dout), None, None


_conv_cl_op.register_autograd(_conv_cl_backward, setup_context=_conv_cl_setup)


class _EagerConv(torch.autograd.Function):
    """The custom op's autograd for eager training, without the op: the same kernels and gradients, none of the
    dispatcher's and pytree's host time (about half of a training call's, measured on a CPU)."""

    @staticmethod
    def forward(ctx, modes, silu, directions, *tensors):
        xs, weights, biases = tensors[:directions], tensors[directions:2 * directions], tensors[2 * directions:]
        arguments = (list(xs), list(weights), list(biases), modes, silu)
        _conv_cl_setup(ctx, arguments, None)
        return _conv_cl_forward(*arguments)

    @staticmethod
    def backward(ctx, dout):
        dxs, dws, dbs = _conv_cl_grads(ctx, dout, _conv_cl_bwd)
        return None, None, None, *dxs, *dws, *dbs


def channel_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x`` with unit stride along its channels (last dim), copied only where it has not: 2:4 semi-structured
    matmuls return their (batch, L, out) result as a transposed view, which the channels-last kernels can't read."""
    return x if x.stride(-1) == 1 else x.contiguous()


def conv1d_channels_last(inputs, weights, biases, paddings, activation: str | None = None) -> torch.Tensor:
    """One or two depthwise 1-D convolutions on channels-last tokens in one kernel, without layout copies.

    Args:
        inputs: one (batch, L, dim) tensor per direction (the same tensor twice for Vim's two directions; the x and
            z halves of one Linear output for MambaVision), channels contiguous, both with one set of strides.
        weights, biases: one per direction, (dim, K) or (dim, 1, K), and (dim,) or None (all or none); the two
            directions' tensors of one dtype.
        paddings: one per direction: 'causal' (step t sees t-K+1..t), 'reverse' (t..t+K-1; see
            :func:`causal_conv1d`) or 'same' (PyTorch's symmetric padding).
        activation: None or 'silu'.

    Returns:
        (directions, batch, L, dim), contiguous, the inputs' dtype. Computed in float32 by a Triton kernel (CUDA,
        or the CPU under TRITON_INTERPRET=1) behind the custom ops ``mmssm::conv1d_channels_last`` and its
        ``_bwd`` (so ``torch.compile(fullgraph=True)`` traces them); the backward recomputes the pre-activation
        and writes channels-last too.
    """
    name = 'conv1d_channels_last'
    if activation not in ACTIVATIONS:
        raise ValueError(f'{name}: activation must be one of {ACTIVATIONS}, got {activation!r}.')
    if not 1 <= len(inputs) <= 2 or not len(inputs) == len(weights) == len(biases) == len(paddings):
        raise ValueError(f'{name}: one or two directions, one input, weight, bias and padding each.')
    if any(p not in PADDINGS for p in paddings):
        raise ValueError(f'{name}: paddings must be among {PADDINGS}, got {paddings!r}.')
    x = inputs[0]
    if not channels_last_available(x):
        raise RuntimeError(f'{name} runs on CUDA tensors with triton installed, got a {x.device} tensor; use '
                           'conv1d_reference there.')
    if any(t.dim() != 3 or t.stride(-1) != 1 or t.shape != x.shape or t.stride() != x.stride() or t.dtype != x.dtype
           for t in inputs):
        raise ValueError(f'{name}: inputs must be (batch, L, dim) with contiguous channels, one shape, dtype and '
                         f'strides, got {[(tuple(t.shape), t.stride()) for t in inputs]}.')
    weights = [w.squeeze(1) if w.dim() == 3 else w for w in weights]
    if any(w.shape != (x.shape[-1], weights[0].shape[-1]) or w.dtype != weights[0].dtype for w in weights):
        raise ValueError(f'{name}: weights must be (dim, K) with dim={x.shape[-1]}, one shape and dtype, got '
                         f'{[tuple(w.shape) for w in weights]}.')
    if (biases[0] is None) != (biases[-1] is None):
        raise ValueError(f'{name}: give a bias to every direction or to none.')
    arguments = (list(inputs), [w.contiguous() for w in weights], [] if biases[0] is None else list(biases),
                 [PADDINGS.index(p) for p in paddings], activation == 'silu')
    tensors = arguments[0] + arguments[1] + arguments[2]
    route = op_route(tensors)
    if route == 'direct':  # inference: the kernel without the op's wrappers
        return _conv_cl_forward(*arguments)
    if route == 'function':  # eager training: the op's autograd without the op
        return _EagerConv.apply(arguments[3], arguments[4], len(inputs), *tensors)
    return _conv_cl_op(*arguments)
