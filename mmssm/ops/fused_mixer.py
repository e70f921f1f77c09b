"""The channels-last Mamba mixer between in_proj and the directions' merge as one autograd Function, for eager
training: short convolutions + SiLU, x_proj, dt_proj and the selective scan of one or two directions, with a
hand-written backward.

Autograd would keep about 45 nodes a bidirectional Vim layer here (views, splits, casts, matmuls, the kernels'
Functions), each costing host time in the backward, and it would save each direction's conv output (the scan's u)
and delta for the scan's backward. This Function keeps the in_proj output, the small x_proj outputs, A and the
scan's state checkpoints, and recomputes u (one conv kernel) and delta (one small matmul a direction) in its
backward. The kernels are those of :func:`~mmssm.ops.causal_conv1d.conv1d_channels_last` and the Triton scan;
:meth:`MambaMixer._channels_last_scan` is the reference it is tested against (every gradient).
"""
import torch
import torch.nn.functional as F

from .causal_conv1d import PADDINGS, _conv_cl_bwd, _conv_cl_forward
from .selective_scan import triton_scan


def _matmul_dtype(weight, like):
    # the activations' dtype (bf16 under autocast, where autocast would cast the weight to it as well)
    return weight if weight.dtype == like.dtype else weight.to(like.dtype)


class FusedMixerCore(torch.autograd.Function):
    """``apply(meta, xz, *conv_weights, *conv_biases, *x_proj_weights, *dt_proj_weights, *A_logs, *Ds, *dt_biases)``
    with one tensor per direction in each group (conv biases may be None) -> each direction's scan output, (batch,
    d_inner, L) in the channels-last layout (``out.transpose(1, 2)`` is a contiguous (batch, L, d_inner)), as
    separate outputs (their gradients reach the backward as they are, with no select and stack in between).

    meta: (d_inner, dt_rank, d_state, paddings, reverse flags, discretization) as the mixer has them. xz: the
    in_proj output (batch, L, 2 d_inner), channels contiguous; its second half is the gate z of every direction.
    """

    @staticmethod
    def forward(ctx, meta, xz, *params):
        d_inner, rank, state, paddings, reverse, method = meta
        n = len(reverse)
        conv_w, conv_b, x_w, dt_w, a_log, D, dt_b = (params[i * n:(i + 1) * n] for i in range(7))
        x, z = xz[..., :d_inner], xz[..., d_inner:]
        weights = [w.squeeze(1) if w.dim() == 3 else w for w in conv_w]
        weights = [w if w.is_contiguous() else w.contiguous() for w in weights]
        biases = [] if conv_b[0] is None else list(conv_b)
        modes = [PADDINGS.index(p) for p in paddings]
        us = _conv_cl_forward([x] * n, weights, biases, modes, True)  # (directions, batch, L, d_inner)
        x_dbl = [F.linear(us[i], _matmul_dtype(x_w[i], us)) for i in range(n)]  # (batch, L, rank + 2N)
        A = [-torch.exp(a.float()) for a in a_log]
        scan_in = FusedMixerCore._scan_inputs(x_dbl, us, z, dt_w, A, D, dt_b, rank, state)
        out, _, saved = triton_scan.forward(*scan_in, True, method, list(reverse), True, stacked=True)
        ctx.meta, ctx.has_bias, ctx.modes = meta, bool(biases), modes
        # A (N floats a channel) is kept rather than recomputed: two kernels fewer a direction in the backward
        ctx.save_for_backward(xz, *weights, *biases, *x_w, *dt_w, *A, *D, *dt_b, *x_dbl, saved)
        ctx.param_dtypes = [p.dtype for p in a_log]
        ctx.conv_shapes = [w.shape for w in conv_w]
        return tuple(out.unbind(0))

    @staticmethod
    def _scan_inputs(x_dbl, us, z, dt_w, A, D, dt_b, rank, state):
        """The scan's per-direction lists (u, delta, A, B, C, D, delta_bias, z) from the x_proj outputs (A:
        -exp(A_log) in float32)."""
        u, delta, B, C = [], [], [], []
        for i, xd in enumerate(x_dbl):
            u.append(us[i].transpose(1, 2))
            delta.append(F.linear(xd[..., :rank], _matmul_dtype(dt_w[i], xd)).transpose(1, 2))
            B.append(xd[..., rank:rank + state].transpose(1, 2).unsqueeze(1))
            C.append(xd[..., rank + state:].transpose(1, 2).unsqueeze(1))
        return (u, delta, A, B, C, [d.float() for d in D], [b.float() for b in dt_b],
                [z.transpose(1, 2)] * len(x_dbl))

    @staticmethod
    def backward(ctx, *dout):
        d_inner, rank, state, paddings, reverse, method = ctx.meta
        n = len(reverse)
        saved = ctx.saved_tensors
        xz, rest = saved[0], list(saved[1:])
        weights, rest = rest[:n], rest[n:]
        biases, rest = (rest[:n], rest[n:]) if ctx.has_bias else ([], rest)
        x_w, dt_w, A, D, dt_b, x_dbl = (rest[i * n:(i + 1) * n] for i in range(6))
        states = rest[-1]
        x, z = xz[..., :d_inner], xz[..., d_inner:]
        # recomputed: each direction's conv output (the scan's u) and delta; dt_proj's weight cast once for both
        # of its matmuls
        us = _conv_cl_forward([x] * n, weights, biases, ctx.modes, True)
        dt_w_mm = [_matmul_dtype(w, xd) for w, xd in zip(dt_w, x_dbl)]
        scan_in = FusedMixerCore._scan_inputs(x_dbl, us, z, dt_w_mm, A, D, dt_b, rank, state)
        du, ddelta, dA, dB, dC, dD, ddt_b, dz = triton_scan.backward(
            list(dout), *scan_in, True, method, list(reverse), list(states.unbind(0)), [])
        dx_w, ddt_w, dus = [], [], torch.empty_like(us)
        for i in range(n):
            grad_delta = ddelta[i].transpose(1, 2)  # (batch, L, d_inner)
            dt = x_dbl[i][..., :rank]
            ddt_w.append(grad_delta.flatten(0, 1).t().mm(dt.flatten(0, 1)).to(dt_w[i].dtype))
            grad_dbl = torch.cat([grad_delta @ _matmul_dtype(dt_w_mm[i], grad_delta),
                                  dB[i].squeeze(1).transpose(1, 2).to(grad_delta.dtype),
                                  dC[i].squeeze(1).transpose(1, 2).to(grad_delta.dtype)], dim=-1)
            dx_w.append(grad_dbl.flatten(0, 1).t().mm(us[i].flatten(0, 1)).to(x_w[i].dtype))
            torch.addmm(du[i].transpose(1, 2).flatten(0, 1), grad_dbl.flatten(0, 1),
                        _matmul_dtype(x_w[i], grad_dbl), out=dus[i].flatten(0, 1))
        dx, dw, db = _conv_cl_bwd(dus, [x] * n, weights, biases, ctx.modes, True)
        dxz = torch.empty_like(xz)
        if n > 1:
            torch.add(dx[0], dx[1], out=dxz[..., :d_inner])
            torch.add(dz[0].transpose(1, 2), dz[1].transpose(1, 2), out=dxz[..., d_inner:])
        else:
            dxz[..., :d_inner].copy_(dx[0])
            dxz[..., d_inner:].copy_(dz[0].transpose(1, 2))
        conv_w = [g.to(w.dtype).view(shape) for g, w, shape in zip(dw.unbind(0), weights, ctx.conv_shapes)]
        conv_b = [g.to(b.dtype) for g, b in zip(db.unbind(0), biases)] if ctx.has_bias else [None] * n
        d_a_log = [(g * a).to(dtype) for g, a, dtype in zip(dA, A, ctx.param_dtypes)]
        d_d = [g.to(p.dtype) for g, p in zip(dD, D)]
        d_b = [g.to(p.dtype) for g, p in zip(ddt_b, dt_b)]
        return None, dxz, *conv_w, *conv_b, *dx_w, *ddt_w, *d_a_log, *d_d, *d_b
