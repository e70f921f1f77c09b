"""The Triton selective scan: forward and backward kernels for every discretization, on CUDA devices.

One call runs one or two directions (a bidirectional Vim block in one launch: the second direction's tensors are
reached from the first one's pointer by an element offset, so nothing is stacked or copied).

A program owns BLOCK_D channels x N states and steps through time. On long sequences of a small batch, the forward
splits the sequence into chunks run in parallel (a local pass, a pass over the chunks' end states, a final pass; the
recurrence is linear in the state), and the backward into segments the same way (a local pass of the adjoint alone,
a pass over the segments from the last, the full backward per segment). The forward saves the state every
CHECKPOINT_L steps; the backward recomputes each such chunk into a program-private scratch and walks it backwards,
holding what step t gives to u and B at t - j in registers until the walk gets there. (A first design with
associative scans over (N, L) tiles of one channel was slower at every measured shape and was removed.)

The kernels evaluate discretize.py's math per element in float32 and clamp the earlier samples at the sequence start.
The forward's (states, channels) tile puts the channels across the lanes and every state of a channel in one thread,
so the sum over the states (the output) needs no shuffles; A and the saved states are read and written one state
row at a time, since a 2-D access contiguous in the states pulls the layout the other way (Triton 3.6 follows it
into the step loop). (The backward keeps its
(channels, states) tile: the same change made it 1.14-1.33x slower on an H100, its sums over the channels then
crossing the lanes.)
"""
import os

import torch

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - triton comes with CUDA builds of torch
    triton = None

from ..eager import cdiv, next_power_of_2
from ..launch import fast_launch
from .discretize import METHODS, NEIGHBOURS
from .segments import split_length

# Forward: channels per program, and the programs to keep at least (fewer channels per program below it). Swept
# with benchmarks/scan_tune.py on an H100 (docs/benchmarks.md): many state elements per thread (64 channels x 16
# states on one warp) beat more threads per program at every measured shape.
FWD_BLOCK_D = 64
# The other methods' wider step (more registers per channel: 128-168 a thread at 32 channels where zoh has 80)
# gets fewer channels per program in the whole-sequence forward (docs/benchmarks.md, methodtune)
FWD_BLOCK_D_METHODS = 32
FWD_PROGRAMS = 1024
FWD_WARPS = 1
# The forward's softplus where it saves checkpoints at 16 states (N_PAD): libdevice's log, which measured faster
# there than the series that is faster everywhere else (docs/benchmarks.md, 2026-12-08).
SOFTPLUS_LOG_SAVED = True
# Chunk-parallel forward (long sequences, few sequences): chunks of at least FWD_MIN_CHUNK steps (a multiple of
# CHECKPOINT_L) when the sequences alone give fewer than FWD_PROGRAMS programs of FWD_BLOCK_D channels.
# FWD_CHUNK_L, when set, forces that chunk length (tests, benchmarks). FWD_MIN_CHUNK not yet swept.
FWD_MIN_CHUNK = 128
FWD_CHUNK_L = None
# Backward: steps recomputed per chunk from the forward's checkpoints, then as the forward.
CHECKPOINT_L = 32
BWD_BLOCK_D = 64
BWD_PROGRAMS = 1024
BWD_WARPS = 2
# Segment-parallel backward (long sequences, few sequences), as the forward's chunks: segments of at least
# BWD_MIN_SEGMENT steps (a multiple of CHECKPOINT_L); BWD_SEGMENT_L, when set, forces the length. Swept on an
# H100: docs/benchmarks.md (2026-12-07).
BWD_MIN_SEGMENT = 128
BWD_SEGMENT_L = None
# dB / dC: stored per program and summed after the kernel (no per-step atomics) while a group spans at most
# BWD_BC_PARTIAL_BLOCKS programs (the buffer grows with them), else added atomically.
BWD_BC_PARTIAL = True
BWD_BC_PARTIAL_BLOCKS = 64
# The whole-sequence zoh scan's backward (BWD_CUDA_ZOH) and forward without gaps (FWD_CUDA_ZOH) run the CUDA
# extension's strided kernels (csrc/selective_scan/zoh_strided.cuh: one thread a channel, one layout) when the
# extension is built, N is 9-16, a group's channels are a multiple of 32 and B, C have u's dtype. On an H100 the
# strided backward took 0.86x the Triton backward's time and the strided forward 1.25x the Triton forward's
# (docs/benchmarks.md), so by default only the backward. MMSSM_TRITON_CUDA_ZOH=0 keeps both on Triton, =1 puts
# both on the extension.
_CUDA_ZOH = os.environ.get('MMSSM_TRITON_CUDA_ZOH', 'bwd')
if _CUDA_ZOH not in ('0', '1', 'bwd'):
    raise ValueError(f"MMSSM_TRITON_CUDA_ZOH={_CUDA_ZOH!r}: use 'bwd' (the default: the strided CUDA backward), "
                     "'1' (forward and backward) or '0' (neither)")
FWD_CUDA_ZOH = _CUDA_ZOH == '1'
BWD_CUDA_ZOH = _CUDA_ZOH != '0'
_TAYLOR_TERMS = 11  # as discretize.py for float32


def is_available() -> bool:
    return triton is not None and torch.cuda.is_available()


def _interpreting() -> bool:
    # TRITON_INTERPRET=1 runs the kernels on CPU tensors through Triton's interpreter (for debugging them)
    return triton is not None and os.environ.get('TRITON_INTERPRET') == '1'


def checkpoint_count(length: int) -> int:
    """States saved per (direction, batch, channel) for the backward: one at the end of each backward chunk but
    the last."""
    return max(0, -(-length // CHECKPOINT_L) - 1)


if triton is not None:
    TAYLOR_TERMS = tl.constexpr(_TAYLOR_TERMS)
    LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E)

    # Compiled kernels divide with div.approx (a reciprocal and a multiply, 2 ulp) where the quotient feeds only
    # softplus and sigmoid; Triton's interpreter has no libdevice, so it divides exactly.
    FAST_DIV = tl.constexpr(os.environ.get('TRITON_INTERPRET', '0') not in ('1', 'true', 'True'))

    @triton.jit
    def _fast_div(a, b):
        if FAST_DIV:
            return libdevice.fast_dividef(a, b)
        else:
            return a / b

    @triton.jit
    def _sigmoid(x):
        """1 / (1 + exp(-x)): an exp2, a reciprocal and a multiply (tl.sigmoid divides exactly)."""
        return _fast_div(1.0, 1.0 + tl.exp2(-x * LOG2E))

    @triton.jit
    def _softplus(x):
        """log(1 + exp(x)) = max(x, 0) + log1p(t), t = exp(-|x|) in (0, 1], without thresholds or a log: log1p(t)
        = 2 atanh(s), s = t / (2 + t) <= 1/3, by its series to s^13 (truncation (1/9)^7 / 15 < 1.5e-8 relative).
        Accurate to float32 rounding where log(1 + exp(x)) loses digits (x below about -17 it rounds to 0, while a
        step of exp(x) still moves a stiff state); equals x above 17 as torch's softplus above 20. 14 instructions
        (a libdevice log1p and its branches took 57 a channel, a quarter of the forward's loop: docs/benchmarks.md)."""
        t = tl.exp2(-tl.abs(x) * LOG2E)
        s = _fast_div(t, 2.0 + t)
        s2 = s * s
        p = 2.0 / 13.0
        p = p * s2 + 2.0 / 11.0
        p = p * s2 + 2.0 / 9.0
        p = p * s2 + 2.0 / 7.0
        p = p * s2 + 2.0 / 5.0
        p = p * s2 + 2.0 / 3.0
        p = p * s2 + 2.0
        return tl.maximum(x, 0.0) + s * p

    @triton.jit
    def _softplus_log(x):
        """softplus by libdevice's log, an exact division and two thresholds: the forward's where it saves
        checkpoints at 16 states (see SOFTPLUS_LOG_SAVED)."""
        e = tl.exp(tl.minimum(x, 20.0))
        series = e * (1.0 - e * (0.5 - e * (1.0 / 3.0 - e * (0.25 - e * 0.2))))
        w = 1.0 + e
        corrected = tl.log(w) * (e / tl.where(e < 0.03125, 1.0, w - 1.0))
        return tl.where(x > 20.0, x, tl.where(e < 0.03125, series, corrected))

    # The forward's (states, channels) tile is read and written one state row at a time: 1-D accesses over the
    # channels. A 2-D access (A, the saved states) let Triton 3.6 lay the whole tile out with each channel's states
    # across 4 lanes, with shuffles for the sum over them and shared-memory round trips every step (Triton 3.7 keeps
    # them in one thread either way; docs/benchmarks.md).
    @triton.jit
    def _load_rows(ptr, offsets, channel_mask, state_stride, N: tl.constexpr, N_PAD: tl.constexpr,
                   BLOCK_D: tl.constexpr):
        """(N_PAD, BLOCK_D) float32 tile of ptr[offsets + n * state_stride] (offsets: one per channel), zero past
        N."""
        states = tl.arange(0, N_PAD)
        tile = tl.zeros([N_PAD, BLOCK_D], dtype=tl.float32)
        for n in tl.static_range(N):
            row = tl.load(ptr + offsets + n * state_stride, mask=channel_mask, other=0.0).to(tl.float32)
            tile = tl.where(states[:, None] == n, row[None, :], tile)
        return tile

    @triton.jit
    def _store_rows(ptr, tile, offsets, channel_mask, state_stride, N: tl.constexpr, N_PAD: tl.constexpr):
        """ptr[offsets + n * state_stride] = tile[n] for n < N (the sum picks a row inside each thread)."""
        states = tl.arange(0, N_PAD)
        for n in tl.static_range(N):
            tl.store(ptr + offsets + n * state_stride, tl.sum(tl.where(states[:, None] == n, tile, 0.0), axis=0),
                     mask=channel_mask)

    @triton.jit
    def _exp_phis(x, inverse, COUNT: tl.constexpr):
        """exp(x), phi_1(x) .. phi_5(x) (those above COUNT are zero), as discretize._exp_and_phis. ``inverse``: 1 / x
        (read where |x| >= 1 only), which the kernels form as (1 / A)(1 / dt): one division per channel and step
        instead of one per state."""
        small = tl.abs(x) < 1.0
        xs = tl.minimum(tl.maximum(x, -1.0), 1.0)
        e = tl.exp(x)
        # Taylor series of phi_COUNT by Horner: sum_j xs^j / (j + COUNT)!
        coefficient = 1.0
        for i in tl.static_range(1, TAYLOR_TERMS + COUNT):
            coefficient = coefficient / i  # ends at 1 / (TERMS - 1 + COUNT)!
        taylor = xs * 0.0 + coefficient
        for jj in tl.static_range(TAYLOR_TERMS - 1):
            coefficient = coefficient * (TAYLOR_TERMS - 1 - jj + COUNT)  # 1 / (j + COUNT)!, j = TERMS - 2 - jj
            taylor = taylor * xs + coefficient
        zero = x * 0.0
        t5 = zero
        t4 = zero
        t3 = zero
        t2 = zero
        if COUNT == 5:
            t5 = taylor
            t4 = t5 * xs + (1.0 / 24.0)
        if COUNT == 4:
            t4 = taylor
        if COUNT >= 4:
            t3 = t4 * xs + (1.0 / 6.0)
        if COUNT == 3:
            t3 = taylor
        if COUNT >= 3:
            t2 = t3 * xs + 0.5
        if COUNT == 2:
            t2 = taylor
        t1 = t2 * xs + 1.0
        c1 = (e - 1.0) * inverse
        c2 = (c1 - 1.0) * inverse
        c3 = (c2 - 0.5) * inverse
        c4 = (c3 - 1.0 / 6.0) * inverse
        c5 = (c4 - 1.0 / 24.0) * inverse
        return (e, tl.where(small, t1, c1), tl.where(small, t2, c2), tl.where(small, t3, c3),
                tl.where(small, t4, c4), tl.where(small, t5, c5))

    @triton.jit
    def _discretize(x, inverse, METHOD: tl.constexpr, DERIV: tl.constexpr):
        """A_bar, W_0..W_3 and (with DERIV) their derivatives in x, for METHODS[METHOD]; unused weights are 0.
        ``inverse``: 1 / x, for the exponential integrators (see _exp_phis)."""
        zero = x * 0.0
        a_bar = zero
        a_bar_p = zero
        w0 = zero
        w1 = zero
        w2 = zero
        w3 = zero
        w0p = zero
        w1p = zero
        w2p = zero
        w3p = zero
        if METHOD == 0:  # zoh
            a_bar = tl.exp(x)
            a_bar_p = a_bar
            w0 = zero + 1.0
        elif METHOD == 2:  # bilinear
            inverse = 1.0 / (2.0 - x)
            a_bar = (2.0 + x) * inverse
            w0 = inverse
            w1 = inverse
            if DERIV:
                w0p = inverse * inverse
                w1p = w0p
                a_bar_p = 4.0 * w0p
        elif METHOD == 5:  # rk4
            a_bar = 1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0))))
            mid = (4.0 + x * (2.0 + x * 0.5)) * (1.0 / 6.0)
            start = (1.0 + x * (1.0 + x * (0.5 + x * 0.25))) * (1.0 / 6.0)
            w0 = 1.0 / 6.0 + mid * (5.0 / 16.0)
            w1 = start + mid * (15.0 / 16.0)
            w2 = mid * (-5.0 / 16.0)
            w3 = mid * (1.0 / 16.0)
            if DERIV:
                a_bar_p = 1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0)))
                mid_p = (2.0 + x) * (1.0 / 6.0)
                start_p = (1.0 + x * (1.0 + x * 0.75)) * (1.0 / 6.0)
                w0p = mid_p * (5.0 / 16.0)
                w1p = start_p + mid_p * (15.0 / 16.0)
                w2p = mid_p * (-5.0 / 16.0)
                w3p = mid_p * (1.0 / 16.0)
        else:  # the exponential integrators: moments mu_k = k! phi_{k+1}
            DEGREE: tl.constexpr = 1 if METHOD == 1 else (2 if METHOD == 3 else 3)
            COUNT: tl.constexpr = DEGREE + 2 if DERIV else DEGREE + 1
            e, p1, p2, p3, p4, p5 = _exp_phis(x, inverse, COUNT)
            a_bar = e
            a_bar_p = e
            m0 = p1
            m1 = p2
            m2 = p3 * 2.0
            m3 = p4 * 6.0
            m4 = p5 * 24.0
            # derivatives of the moments: mu_k' = mu_k - mu_{k+1}
            d0 = m0 - m1
            d1 = m1 - m2
            d2 = m2 - m3
            d3 = m3 - m4
            if METHOD == 1:  # foh
                w0 = m1
                w1 = m0 - m1
                w0p = d1
                w1p = d0 - d1
            elif METHOD == 3:  # poly
                w0 = 0.5 * m1 + 0.5 * m2
                w1 = m0 - m2
                w2 = -0.5 * m1 + 0.5 * m2
                w0p = 0.5 * d1 + 0.5 * d2
                w1p = d0 - d2
                w2p = -0.5 * d1 + 0.5 * d2
            else:  # highorder
                w0 = m1 * (1.0 / 3.0) + 0.5 * m2 + m3 * (1.0 / 6.0)
                w1 = m0 + 0.5 * m1 - m2 - 0.5 * m3
                w2 = -m1 + 0.5 * m2 + 0.5 * m3
                w3 = m1 * (1.0 / 6.0) - m3 * (1.0 / 6.0)
                w0p = d1 * (1.0 / 3.0) + 0.5 * d2 + d3 * (1.0 / 6.0)
                w1p = d0 + 0.5 * d1 - d2 - 0.5 * d3
                w2p = -d1 + 0.5 * d2 + 0.5 * d3
                w3p = d1 * (1.0 / 6.0) - d3 * (1.0 / 6.0)
        return a_bar, w0, w1, w2, w3, a_bar_p, w0p, w1p, w2p, w3p

    @triton.jit
    def _position(p, length, reverse):
        """Memory index of scan position p (clamped to the sequence)."""
        p = tl.minimum(tl.maximum(p, 0), length - 1)
        return tl.where(reverse != 0, length - 1 - p, p)

    @triton.jit
    def _taps(u_rows, B_states, state_mask, t, length, reverse, u_sl, bc_sl, K: tl.constexpr):
        """u and B at steps t, t-1, .., t-K of the scan (clamped at its start); the unused ones repeat step t.
        u_sl, bc_sl: the time strides of u and B."""
        pos = _position(t, length, reverse)
        u0 = tl.load(u_rows + pos * u_sl).to(tl.float32)
        B0 = tl.load(B_states + pos * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
        u1 = u0
        u2 = u0
        u3 = u0
        B1 = B0
        B2 = B0
        B3 = B0
        if K >= 1:
            pos = _position(t - 1, length, reverse)
            u1 = tl.load(u_rows + pos * u_sl).to(tl.float32)
            B1 = tl.load(B_states + pos * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
        if K >= 2:
            pos = _position(t - 2, length, reverse)
            u2 = tl.load(u_rows + pos * u_sl).to(tl.float32)
            B2 = tl.load(B_states + pos * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
        if K >= 3:
            pos = _position(t - 3, length, reverse)
            u3 = tl.load(u_rows + pos * u_sl).to(tl.float32)
            B3 = tl.load(B_states + pos * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
        return u0, u1, u2, u3, B0, B1, B2, B3

    @triton.jit
    def _shift_taps(u0, u1, u2, u3, B0, B1, B2, B3, K: tl.constexpr):
        """The next step's earlier samples (t-1, t-2, t-3) from this step's (t, t-1, t-2)."""
        if K >= 3:
            u3 = u2
            B3 = B2
        if K >= 2:
            u2 = u1
            B2 = B1
        if K >= 1:
            u1 = u0
            B1 = B0
        return u1, u2, u3, B1, B2, B3

    @triton.jit
    def _tap_sum(w0, w1, w2, w3, u0, u1, u2, u3, B0, B1, B2, B3, K: tl.constexpr, STATES_FIRST: tl.constexpr):
        """sum_j w_j * u_j B_j over the step and its K earlier samples, as a (states, channels) tile (the forward's)
        or a (channels, states) one (the backward's)."""
        if STATES_FIRST:
            total = w0 * (u0[None, :] * B0[:, None])
            if K >= 1:
                total += w1 * (u1[None, :] * B1[:, None])
            if K >= 2:
                total += w2 * (u2[None, :] * B2[:, None])
            if K >= 3:
                total += w3 * (u3[None, :] * B3[:, None])
        else:
            total = w0 * (u0[:, None] * B0[None, :])
            if K >= 1:
                total += w1 * (u1[:, None] * B1[None, :])
            if K >= 2:
                total += w2 * (u2[:, None] * B2[None, :])
            if K >= 3:
                total += w3 * (u3[:, None] * B3[None, :])
        return total

    @triton.jit
    def _tap_grads(g, w, u_j, B_j, dt):
        """What the input term dt * w * B_j * u_j of the steps' states (adjoint g) gives back: to dt, and to u and
        B at the earlier step j (they are added there when the walk reaches it)."""
        Q = g * w
        q = tl.sum(Q * B_j[None, :], axis=1)
        return u_j * q, dt * q, tl.sum(Q * (dt * u_j)[:, None], axis=0)

    @triton.jit
    def _adjoint_inputs(delta_rows, C_states, dout_rows, z_rows, pos, state_mask, x_sl, bc_sl, g_sl, z_sl,
                        HAS_Z: tl.constexpr):
        """What the backward's walk reads at memory index pos: delta (before its bias), C, dout and z (dout when
        there is no gate), in float32."""
        raw = tl.load(delta_rows + pos * x_sl).to(tl.float32)
        C = tl.load(C_states + pos * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
        dout = tl.load(dout_rows + pos * g_sl).to(tl.float32)
        z = dout
        if HAS_Z:
            z = tl.load(z_rows + pos * z_sl).to(tl.float32)
        return raw, C, dout, z

    @fast_launch
    @triton.jit
    def _scan_fwd_seq_kernel(
            u_ptr, delta_ptr, z_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, out_ptr, last_ptr, ckpt_ptr,
            start_ptr, local_ptr, prod_ptr, gap_ptr,
            u_off, delta_off, z_off, A_off, B_off, C_off, D_off, bias_off, out_off, reverse0, reverse1,
            x_sb, x_sd, x_sl, z_sb, z_sd, z_sl, o_sb, o_sd, o_sl, bc_sb, bc_sg, bc_sn, bc_sl, a_sd, a_sn,
            batch_size, dim, length, per_group, groups, n_ckpt, chunk_len, n_chunks,
            N: tl.constexpr, N_PAD: tl.constexpr, BLOCK_D: tl.constexpr, CKPT_L: tl.constexpr,
            METHOD: tl.constexpr, K: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
            SAVE: tl.constexpr, PHASE: tl.constexpr, GAP: tl.constexpr = False, A_LOG: tl.constexpr = False,
            SOFTPLUS_LOG: tl.constexpr = False):
        """The forward as a recurrence in time: a program owns BLOCK_D channels x N states (one element per
        state in registers) and steps through its chunk of the sequence.

        PHASE 0: one chunk, the whole sequence from the zero state. Chunk-parallel (program_id(1) = chunk):
        PHASE 1 runs each chunk from the zero state and keeps its end state and the product of its A_bar
        (h_end = prod * h_start + local, the recurrence being linear in h); _scan_combine_kernel turns them
        into each chunk's start state; PHASE 2 reruns each chunk from its start state and writes the outputs.
        GAP (zoh, inference): gap_ptr holds (directions, batch, L) float32 counts g of pruned steps before each
        step, whose decay becomes exp((1 + g) delta A) (token pruning's hidden-state alignment, gap_form's math).
        A_LOG: A_ptr holds log(-A) (a model's A_log parameters, any float dtype): nothing is computed per call on
        the host."""
        program = tl.program_id(0).to(tl.int64)
        chunk = tl.program_id(1).to(tl.int64)
        # int64: the second direction's offsets (direction * rows_total * length, ...) pass 2^31 at B D L >= 2^31
        direction = tl.program_id(2).to(tl.int64)
        blocks = dim // BLOCK_D
        batch = program // blocks
        first = (program % blocks) * BLOCK_D
        group = first // per_group
        reverse = tl.where(direction == 0, reverse0, reverse1)
        rows_total = tl.cast(batch_size, tl.int64) * dim
        channels = first + tl.arange(0, BLOCK_D)
        states = tl.arange(0, N_PAD)
        state_mask = states < N
        rows = batch * dim + channels
        seq = batch * x_sb + channels * x_sd  # u and delta share a layout (x_s*: batch, channel, time); out o_s*
        u_rows = u_ptr + direction * u_off + seq
        delta_rows = delta_ptr + direction * delta_off + seq
        z_rows = z_ptr + direction * z_off + batch * z_sb + channels * z_sd
        gap_row = gap_ptr + (direction * batch_size + batch) * length
        out_rows = out_ptr + direction * out_off + batch * o_sb + channels * o_sd
        bc_row = batch * bc_sb + group * bc_sg + states * bc_sn
        B_states = B_ptr + direction * B_off + bc_row
        C_states = C_ptr + direction * C_off + bc_row
        channel_mask = channels < dim
        A = _load_rows(A_ptr + direction * A_off, channels * a_sd, channel_mask, a_sn, N, N_PAD, BLOCK_D)
        if A_LOG:
            A = -tl.exp(A)
        A2 = A * LOG2E  # exp(x) = exp2(x log2(e)): the zoh loop multiplies once per state
        A_inv = 1.0 / tl.where(A == 0.0, 1.0, A)  # (the phi functions' 1 / x; padded states: x = 0, never read)
        D = tl.load(D_ptr + direction * D_off + channels).to(tl.float32)
        bias = tl.load(bias_ptr + direction * bias_off + channels).to(tl.float32)
        h = tl.zeros([N_PAD, BLOCK_D], dtype=tl.float32)
        # the chunk buffers: (directions, batch, dim, N, n_chunks); the saved states: (directions, batch, dim, ..., N)
        chunk_rows = (direction * rows_total + rows) * N * n_chunks + chunk
        saved_rows = direction * rows_total + rows
        if PHASE == 2:
            h = _load_rows(start_ptr, chunk_rows, channel_mask, n_chunks, N, N_PAD, BLOCK_D)
        prod = tl.zeros([N_PAD, BLOCK_D], dtype=tl.float32) + 1.0
        start = tl.where(reverse != 0, length - 1, 0)
        step = tl.where(reverse != 0, -1, 1)
        t_begin = chunk * chunk_len
        t_end = tl.minimum(t_begin + chunk_len, length)
        # Each step loads the next step's samples before its own math, so their latency hides behind it (the loop is
        # latency-bound: a few loads and one state update per step). The K earlier samples move along in registers.
        u_next, u1, u2, u3, B_next, B1, B2, B3 = _taps(u_rows, B_states, state_mask, t_begin, length, reverse, x_sl,
                                                       bc_sl, K)
        pos = start + step * t_begin
        dt_next = tl.load(delta_rows + pos * x_sl).to(tl.float32)
        scale_next = 1.0
        if GAP:
            scale_next = 1.0 + tl.load(gap_row + pos)
        C_next = B_next
        z_next = u_next
        if PHASE != 1:
            C_next = tl.load(C_states + pos * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
            if HAS_Z:
                z_next = tl.load(z_rows + pos * z_sl).to(tl.float32)
        for t in range(t_begin, t_end):
            pos = start + step * t
            u0 = u_next
            B0 = B_next
            Ct = C_next
            zv = z_next
            scale = scale_next
            following = _position(t + 1, length, reverse)  # (clamped: the last step reloads itself)
            u_next = tl.load(u_rows + following * x_sl).to(tl.float32)
            B_next = tl.load(B_states + following * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
            dt = dt_next + bias
            dt_next = tl.load(delta_rows + following * x_sl).to(tl.float32)
            if GAP:
                scale_next = 1.0 + tl.load(gap_row + following)
            if PHASE != 1:
                C_next = tl.load(C_states + following * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
                if HAS_Z:
                    z_next = tl.load(z_rows + following * z_sl).to(tl.float32)
            if SOFTPLUS:
                if SOFTPLUS_LOG:
                    dt = _softplus_log(dt)
                else:
                    dt = _softplus(dt)
            if METHOD == 0:  # zoh: per state one multiply, one exp2 and two FMAs (the loop is issue-bound)
                step_dt = dt * scale if GAP else dt
                a_bar = tl.exp2(A2 * step_dt[None, :])
                h = a_bar * h + (u0 * dt)[None, :] * B0[:, None]
            else:
                x = A * dt[None, :]
                dt_inv = 1.0 / dt
                if GAP:
                    x = x * scale
                    dt_inv = dt_inv / scale
                a_bar, w0, w1, w2, w3, _a, _b, _c, _d, _e = _discretize(x, A_inv * dt_inv[None, :], METHOD, False)
                forcing = _tap_sum(w0, w1, w2, w3, u0, u1, u2, u3, B0, B1, B2, B3, K, True)
                h = a_bar * h + forcing * dt[None, :]
            if PHASE == 1:
                prod = prod * a_bar
            else:
                y = tl.sum(h * Ct[:, None], axis=0) + D * u0
                if HAS_Z:
                    y = y * zv * _sigmoid(zv)
                tl.store(out_rows + pos * o_sl, y.to(out_ptr.dtype.element_ty))
                if SAVE:
                    index = t // CKPT_L
                    if (t % CKPT_L == CKPT_L - 1) & (index < n_ckpt):
                        _store_rows(ckpt_ptr, h, (saved_rows * n_ckpt + index) * N, channel_mask, 1, N, N_PAD)
            u1, u2, u3, B1, B2, B3 = _shift_taps(u0, u1, u2, u3, B0, B1, B2, B3, K)
        if PHASE == 1:
            _store_rows(local_ptr, h, chunk_rows, channel_mask, n_chunks, N, N_PAD)
            _store_rows(prod_ptr, prod, chunk_rows, channel_mask, n_chunks, N, N_PAD)
        elif chunk == n_chunks - 1:
            _store_rows(last_ptr, h, saved_rows * N, channel_mask, 1, N, N_PAD)

    @fast_launch
    @triton.jit
    def _scan_combine_kernel(start_ptr, local_ptr, prod_ptr, init_ptr, total, n_chunks, BLOCK: tl.constexpr,
                             REVERSE: tl.constexpr = False, HAS_INIT: tl.constexpr = False):
        """Each chunk's carry from the chunks before it in the walk's order: S_first = init (0 without HAS_INIT),
        S_next = prod_c S_c + local_c, for BLOCK (direction, batch, channel, state) entries at once; the buffers
        are (entries, chunks), init (entries,). The forward's walk (start states) goes up the chunks, the
        backward's (the adjoint flowing into each segment's last step, REVERSE) down."""
        entries = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = entries < total
        h = tl.zeros([BLOCK], dtype=tl.float32)
        if HAS_INIT:
            h = tl.load(init_ptr + entries, mask=mask, other=0.0)
        for i in range(0, n_chunks):
            c = n_chunks - 1 - i if REVERSE else i
            tl.store(start_ptr + entries * n_chunks + c, h, mask=mask)
            h = tl.load(prod_ptr + entries * n_chunks + c, mask=mask, other=0.0) * h \
                + tl.load(local_ptr + entries * n_chunks + c, mask=mask, other=0.0)

    @fast_launch
    @triton.jit
    def _scan_bwd_seq_kernel(
            u_ptr, delta_ptr, z_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dout_ptr, ckpt_ptr, dlast_ptr,
            scratch_ptr, du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
            carry_ptr, local_ptr, prod_ptr, pend_u_ptr, pend_B_ptr,
            u_off, delta_off, z_off, A_off, B_off, C_off, D_off, bias_off, dout_off, reverse0, reverse1,
            x_sb, x_sd, x_sl, z_sb, z_sd, z_sl, bc_sb, bc_sg, bc_sn, bc_sl, g_sb, g_sd, g_sl, a_sd, a_sn,
            batch_size, dim, length, per_group, groups, n_ckpt, seg_chunks, n_segs,
            N: tl.constexpr, N_PAD: tl.constexpr, BLOCK_D: tl.constexpr, CKPT_L: tl.constexpr,
            METHOD: tl.constexpr, K: tl.constexpr, HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr,
            HAS_DLAST: tl.constexpr, BC_PARTIAL: tl.constexpr = False, PHASE: tl.constexpr = 0):
        """The backward as recurrences in time: per chunk of CKPT_L steps (last chunk first), the states are
        recomputed from the saved checkpoint into a program-private scratch (it stays in cache), then the adjoint
        walks the chunk backwards. What step t gives to u and B at step t - j waits in registers until the walk
        reaches t - j; dB and dC are summed over the program's channels and added atomically per step, or with
        BC_PARTIAL stored per program (dB_ptr, dC_ptr: (directions, batch, blocks, N, L), summed over the blocks
        after the kernel; no atomics).

        PHASE 0: the whole sequence (one segment). Segment-parallel (program_id(1) = segment of seg_chunks chunks):
        PHASE 1 walks each segment's adjoint alone, from zero (it needs no states: g_t = C_t dy_t + A_bar_t+1
        g_t+1), and keeps what flows out of its first step (A_bar g) and the product of its A_bar;
        _scan_combine_kernel turns them, from the last segment down, into the adjoint flowing into each segment's
        last step (carry_ptr); PHASE 2 runs the backward of each segment from it. What a segment's first steps
        give to u and B before it (K earlier samples) is stored in pend_u_ptr / pend_B_ptr and added after the
        kernel."""
        program = tl.program_id(0).to(tl.int64)
        segment = tl.program_id(1).to(tl.int64)
        # int64: the second direction's offsets (direction * rows_total * length, ...) pass 2^31 at B D L >= 2^31
        direction = tl.program_id(2).to(tl.int64)
        blocks = dim // BLOCK_D
        batch = program // blocks
        first = (program % blocks) * BLOCK_D
        group = first // per_group
        reverse = tl.where(direction == 0, reverse0, reverse1)
        rows_total = tl.cast(batch_size, tl.int64) * dim
        lanes = tl.arange(0, BLOCK_D)
        channels = first + lanes
        states = tl.arange(0, N_PAD)
        state_mask = states < N
        rows = batch * dim + channels
        seq = batch * x_sb + channels * x_sd  # u, delta, du, ddelta and dz share a layout
        u_rows = u_ptr + direction * u_off + seq
        delta_rows = delta_ptr + direction * delta_off + seq
        z_rows = z_ptr + direction * z_off + batch * z_sb + channels * z_sd
        dout_rows = dout_ptr + direction * dout_off + batch * g_sb + channels * g_sd
        grad_rows = direction * rows_total * length + seq
        bc_row = batch * bc_sb + group * bc_sg + states * bc_sn
        B_states = B_ptr + direction * B_off + bc_row
        C_states = C_ptr + direction * C_off + bc_row
        grad_bc = ((direction * batch_size + batch) * groups + group) * N * length + states * length
        if BC_PARTIAL:
            grad_bc = ((direction * batch_size + batch) * blocks + program % blocks) * N * length + states * length
        mask2 = (channels[:, None] < dim) & state_mask[None, :]
        tile = lanes[:, None] * N_PAD + states[None, :]
        scratch = scratch_ptr + ((direction * n_segs + segment) * tl.num_programs(0) + program) * CKPT_L * BLOCK_D \
            * N_PAD + tile
        A = tl.load(A_ptr + direction * A_off + channels[:, None] * a_sd + states[None, :] * a_sn, mask=mask2,
                    other=0.0).to(tl.float32)
        A2 = A * LOG2E  # (zoh, as the forward's)
        A_inv = 1.0 / tl.where(A == 0.0, 1.0, A)  # (as the forward's)
        D = tl.load(D_ptr + direction * D_off + channels).to(tl.float32)
        bias = tl.load(bias_ptr + direction * bias_off + channels).to(tl.float32)
        n_chunks = tl.cdiv(length, CKPT_L)
        c_first = segment * seg_chunks
        c_end = tl.minimum(c_first + seg_chunks, n_chunks)
        t_last = tl.minimum(c_end * CKPT_L, length) - 1
        seg_rows = ((direction * rows_total + rows[:, None]) * N + states[None, :]) * n_segs + segment
        g = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)
        if PHASE == 1:  # the segment's adjoint from zero, and the product of its A_bar
            prod = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32) + 1.0
            a_next = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32) + 1.0
            n_raw, n_C, n_dout, n_z = _adjoint_inputs(delta_rows, C_states, dout_rows, z_rows,
                                                      _position(t_last, length, reverse), state_mask, x_sl, bc_sl,
                                                      g_sl, z_sl, HAS_Z)
            t_first = c_first * CKPT_L
            for tt in range(t_first, t_last + 1):
                t = t_last - (tt - t_first)
                raw = n_raw + bias
                Ct = n_C
                dout = n_dout
                zv = n_z
                n_raw, n_C, n_dout, n_z = _adjoint_inputs(delta_rows, C_states, dout_rows, z_rows,
                                                          _position(t - 1, length, reverse), state_mask, x_sl,
                                                          bc_sl, g_sl, z_sl, HAS_Z)
                dt = raw
                if SOFTPLUS:
                    dt = _softplus(raw)
                if METHOD == 0:
                    a_bar = tl.exp2(A2 * dt[:, None])
                else:
                    a_bar, _w0, _w1, _w2, _w3, _a, _b, _c, _d, _e = _discretize(A * dt[:, None],
                                                                                A_inv * (1.0 / dt)[:, None], METHOD,
                                                                                False)
                dy = dout
                if HAS_Z:
                    dy = dout * zv * _sigmoid(zv)
                g = Ct[None, :] * dy[:, None] + a_next * g
                prod = prod * a_bar
                a_next = a_bar
            tl.store(local_ptr + seg_rows, a_next * g, mask=mask2)
            tl.store(prod_ptr + seg_rows, prod, mask=mask2)
            return
        if PHASE == 2:
            g = tl.load(carry_ptr + seg_rows, mask=mask2, other=0.0)
        elif HAS_DLAST:
            g = tl.load(dlast_ptr + (direction * rows_total + rows[:, None]) * N + states[None, :], mask=mask2,
                        other=0.0).to(tl.float32)
        a_next = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32) + 1.0
        dA_acc = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)
        dD_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        dbias_acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        # contributions waiting for the steps t-1, t-2, t-3 of the walk (u per channel, B per state)
        P1 = tl.zeros([BLOCK_D], dtype=tl.float32)
        P2 = tl.zeros([BLOCK_D], dtype=tl.float32)
        P3 = tl.zeros([BLOCK_D], dtype=tl.float32)
        Q1 = tl.zeros([N_PAD], dtype=tl.float32)
        Q2 = tl.zeros([N_PAD], dtype=tl.float32)
        Q3 = tl.zeros([N_PAD], dtype=tl.float32)
        # As in the forward, each step of both loops loads the next step's samples before its own math. The walk's
        # next step after a chunk's first is the previous chunk's last, so its loads run across the chunks.
        nu0, nu1, nu2, nu3, nB0, nB1, nB2, nB3 = _taps(u_rows, B_states, state_mask, t_last, length, reverse,
                                                       x_sl, bc_sl, K)
        n_raw, n_C, n_dout, n_z = _adjoint_inputs(delta_rows, C_states, dout_rows, z_rows,
                                                  _position(t_last, length, reverse), state_mask, x_sl, bc_sl, g_sl,
                                                  z_sl, HAS_Z)
        for chunk_back in range(0, c_end - c_first):
            chunk = c_end - 1 - chunk_back
            t0 = chunk * CKPT_L
            t1 = tl.minimum(t0 + CKPT_L, length)
            h_start = tl.zeros([BLOCK_D, N_PAD], dtype=tl.float32)
            if chunk > 0:
                h_start = tl.load(ckpt_ptr + ((direction * rows_total + rows[:, None]) * n_ckpt + chunk - 1) * N
                                  + states[None, :], mask=mask2, other=0.0)
            # 1. the chunk's states, from its start state
            h = h_start
            tl.debug_barrier()
            u_next, u1, u2, u3, B_next, B1, B2, B3 = _taps(u_rows, B_states, state_mask, t0, length, reverse,
                                                           x_sl, bc_sl, K)
            dt_next = tl.load(delta_rows + _position(t0, length, reverse) * x_sl).to(tl.float32)
            for t in range(t0, t1):
                u0 = u_next
                B0 = B_next
                dt = dt_next + bias
                following = _position(t + 1, length, reverse)
                u_next = tl.load(u_rows + following * x_sl).to(tl.float32)
                B_next = tl.load(B_states + following * bc_sl, mask=state_mask, other=0.0).to(tl.float32)
                dt_next = tl.load(delta_rows + following * x_sl).to(tl.float32)
                if SOFTPLUS:
                    dt = _softplus(dt)
                if METHOD == 0:  # zoh: as the forward's
                    h = tl.exp2(A2 * dt[:, None]) * h + (u0 * dt)[:, None] * B0[None, :]
                else:
                    a_bar, w0, w1, w2, w3, _a, _b, _c, _d, _e = _discretize(A * dt[:, None],
                                                                            A_inv * (1.0 / dt)[:, None], METHOD,
                                                                            False)
                    forcing = _tap_sum(w0, w1, w2, w3, u0, u1, u2, u3, B0, B1, B2, B3, K, False)
                    h = a_bar * h + forcing * dt[:, None]
                tl.store(scratch + (t - t0) * (BLOCK_D * N_PAD), h)
                u1, u2, u3, B1, B2, B3 = _shift_taps(u0, u1, u2, u3, B0, B1, B2, B3, K)
            tl.debug_barrier()
            # 2. the adjoint, from the chunk's last step down to its first
            h_t = h
            for tt in range(t0, t1):
                t = t1 - 1 - (tt - t0)
                pos = _position(t, length, reverse)
                u0 = nu0
                u1 = nu1
                u2 = nu2
                u3 = nu3
                B0 = nB0
                B1 = nB1
                B2 = nB2
                B3 = nB3
                raw = n_raw + bias
                Ct = n_C
                dout = n_dout
                zv = n_z
                nu0, nu1, nu2, nu3, nB0, nB1, nB2, nB3 = _taps(u_rows, B_states, state_mask, t - 1, length, reverse,
                                                               x_sl, bc_sl, K)
                n_raw, n_C, n_dout, n_z = _adjoint_inputs(  # (clamped: step 0 reloads itself)
                    delta_rows, C_states, dout_rows, z_rows, _position(t - 1, length, reverse), state_mask, x_sl,
                    bc_sl, g_sl, z_sl, HAS_Z)
                h_prev = h_start
                if t > t0:
                    h_prev = tl.load(scratch + (t - t0 - 1) * (BLOCK_D * N_PAD))
                dt = raw
                if SOFTPLUS:
                    dt = _softplus(raw)
                if METHOD == 0:  # zoh: w0 = 1 and no slope of the weights (nothing multiplied by 0 or 1)
                    a_bar = tl.exp2(A2 * dt[:, None])
                else:
                    a_bar, w0, w1, w2, w3, a_bar_p, w0p, w1p, w2p, w3p = _discretize(
                        A * dt[:, None], A_inv * (1.0 / dt)[:, None], METHOD, True)
                if HAS_Z:
                    y = tl.sum(h_t * Ct[None, :], axis=1) + D * u0
                    sig = _sigmoid(zv)
                    dy = dout * zv * sig
                    dz = dout * y * sig * (1.0 + zv * (1.0 - sig))
                    tl.store(dz_ptr + grad_rows + pos * x_sl, dz.to(dz_ptr.dtype.element_ty))
                else:
                    dy = dout
                dD_acc += dy * u0
                g = Ct[None, :] * dy[:, None] + a_next * g
                a_next = a_bar
                if BC_PARTIAL:
                    tl.store(dC_ptr + grad_bc + pos, tl.sum(h_t * dy[:, None], axis=0), mask=state_mask)
                else:
                    tl.atomic_add(dC_ptr + grad_bc + pos, tl.sum(h_t * dy[:, None], axis=0), mask=state_mask)
                if METHOD == 0:
                    grad_x = g * a_bar * h_prev
                    d_dt_j, r0, R0 = _tap_grads(g, 1.0, u0, B0, dt)
                else:
                    slope = _tap_sum(w0p, w1p, w2p, w3p, u0, u1, u2, u3, B0, B1, B2, B3, K, False)
                    grad_x = g * (a_bar_p * h_prev + dt[:, None] * slope)
                    d_dt_j, r0, R0 = _tap_grads(g, w0, u0, B0, dt)
                dA_acc += grad_x * dt[:, None]
                d_dt = tl.sum(grad_x * A, axis=1)
                d_dt += d_dt_j
                du = dy * D + r0 + P1
                dB = R0 + Q1
                r1 = tl.zeros([BLOCK_D], dtype=tl.float32)
                r2 = tl.zeros([BLOCK_D], dtype=tl.float32)
                r3 = tl.zeros([BLOCK_D], dtype=tl.float32)
                R1 = tl.zeros([N_PAD], dtype=tl.float32)
                R2 = tl.zeros([N_PAD], dtype=tl.float32)
                R3 = tl.zeros([N_PAD], dtype=tl.float32)
                if K >= 1:
                    d_dt_j, r1, R1 = _tap_grads(g, w1, u1, B1, dt)
                    d_dt += d_dt_j
                if K >= 2:
                    d_dt_j, r2, R2 = _tap_grads(g, w2, u2, B2, dt)
                    d_dt += d_dt_j
                if K >= 3:
                    d_dt_j, r3, R3 = _tap_grads(g, w3, u3, B3, dt)
                    d_dt += d_dt_j
                if K >= 1:
                    if t == 0:  # what belongs before the sequence start goes to its first sample
                        du += P2 + P3 + r1 + r2 + r3
                        dB += Q2 + Q3 + R1 + R2 + R3
                    P1 = P2 + r1
                    P2 = P3 + r2
                    P3 = r3
                    Q1 = Q2 + R1
                    Q2 = Q3 + R2
                    Q3 = R3
                if SOFTPLUS:
                    d_dt = d_dt * _sigmoid(raw)
                dbias_acc += d_dt
                tl.store(du_ptr + grad_rows + pos * x_sl, du.to(du_ptr.dtype.element_ty))
                tl.store(ddelta_ptr + grad_rows + pos * x_sl, d_dt.to(ddelta_ptr.dtype.element_ty))
                if BC_PARTIAL:
                    tl.store(dB_ptr + grad_bc + pos, dB, mask=state_mask)
                else:
                    tl.atomic_add(dB_ptr + grad_bc + pos, dB, mask=state_mask)
                h_t = h_prev
        if PHASE == 2 and K >= 1:
            if segment > 0:  # what the first steps give to the 3 steps before the segment (added after the kernel)
                pend = ((direction * rows_total + rows) * n_segs + segment) * 3
                tl.store(pend_u_ptr + pend, P1)
                tl.store(pend_u_ptr + pend + 1, P2)
                tl.store(pend_u_ptr + pend + 2, P3)
                pend_b = (((direction * batch_size + batch) * blocks + program % blocks) * n_segs + segment) * 3 * N \
                    + states
                tl.store(pend_B_ptr + pend_b, Q1, mask=state_mask)
                tl.store(pend_B_ptr + pend_b + N, Q2, mask=state_mask)
                tl.store(pend_B_ptr + pend_b + 2 * N, Q3, mask=state_mask)
        parameter_rows = direction * dim + channels
        tl.atomic_add(dA_ptr + parameter_rows[:, None] * N + states[None, :], dA_acc, mask=mask2)
        tl.atomic_add(dD_ptr + parameter_rows, dD_acc)
        tl.atomic_add(dbias_ptr + parameter_rows, dbias_acc)



def _dense(shape, strides, order) -> bool:
    """Whether a tensor of ``shape`` / ``strides`` is dense with its dims nested in ``order`` (outermost first);
    size-1 dims may have any stride, as in torch's is_contiguous."""
    expected = 1
    for dim in reversed(order):
        if shape[dim] != 1 and strides[dim] != expected:
            return False
        expected *= shape[dim]
    return True


def channels_last(t: torch.Tensor) -> bool:
    """Whether a (batch, dim, L) tensor is laid out as (batch, L, dim), the layout of a Linear's output; the
    kernels read and write that layout directly, so a model need not transpose its activations (a tensor that is
    both, L = 1 or dim = 1, counts as contiguous). From the strides (host time: no views)."""
    shape, strides = t.shape, t.stride()
    return not _dense(shape, strides, (0, 1, 2)) and _dense(shape, strides, (0, 2, 1))


def in_layout(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """t (batch, dim, L) in the channels-last (``cl``) or contiguous layout, copied only when it is not."""
    if _dense(t.shape, t.stride(), (0, 2, 1) if cl else (0, 1, 2)):
        return t
    return t.transpose(1, 2).contiguous().transpose(1, 2) if cl else t.contiguous()


def new_rows(directions: int, batch: int, dim: int, length: int, cl: bool, **kwargs) -> torch.Tensor:
    """An empty (directions, batch, dim, L) tensor, each direction in the channels-last or contiguous layout."""
    if cl:
        return torch.empty((directions, batch, length, dim), **kwargs).transpose(2, 3)
    return torch.empty((directions, batch, dim, length), **kwargs)


def _same_strides(tensors: list) -> list:
    """The tensors, made contiguous unless all share one set of strides (the kernels take one per role)."""
    first = tensors[0].stride()
    if all(t.stride() == first for t in tensors[1:]):
        return tensors
    return [t.contiguous() for t in tensors]


def _layouts(u, delta, B, C, z):
    """u and delta in one layout (u's), B and C with one set of strides, z with one: (u, delta, B, C, z, cl)."""
    cl = channels_last(u[0])
    u = [in_layout(t, cl) for t in u]
    delta = [in_layout(t, cl) for t in delta]
    bc = _same_strides(list(B) + list(C))
    return u, delta, bc[:len(B)], bc[len(B):], _same_strides(list(z)) if len(z) else [], cl


def _strides(u, z, B):
    """The kernels' stride arguments: u/delta/out (batch, channel, time), z (same roles), B/C (batch, group,
    state, time)."""
    return (*u[0].stride(), *(z[0].stride() if len(z) else u[0].stride()), *B[0].stride())


def saved_shape(batch: int, dim: int, length: int, state: int, save: bool) -> tuple:
    """Shape of one direction's checkpoints, as forward saves them."""
    return batch, dim, checkpoint_count(length) if save else 0, state


def _offset(tensors) -> int:
    """Elements from the first tensor's data to the second's (0 for one direction)."""
    if len(tensors) < 2:
        return 0
    first, second = tensors
    difference = second.data_ptr() - first.data_ptr()
    if difference % first.element_size():
        raise RuntimeError('mmssm triton scan: the two directions\' tensors are not element-aligned')
    return difference // first.element_size()


def _block_d(per_group: int, batch: int, dim: int, directions: int, largest: int = 16,
             programs: int = 1024) -> int:
    """Channels per program: as many as share B/C loads (and, backward, dB/dC atomics), up to ``largest``, while
    leaving at least ``programs`` programs to fill the GPU."""
    block = largest
    while block > 1 and (per_group % block or batch * dim * directions // block < programs):
        block //= 2
    return block


def _method_constants(method: str):
    return METHODS.index(method), NEIGHBOURS[method]


def _check(u, B):
    if _interpreting():
        return
    if not is_available():
        raise RuntimeError('the triton selective-scan backend needs triton and a CUDA device')
    if u[0].device.type != 'cuda':
        raise RuntimeError(f'the triton selective-scan backend runs on CUDA tensors, got {u[0].device}')


def merged_rows(directions: int, batch: int, dim: int, length: int, **kwargs) -> torch.Tensor:
    """An empty (directions, batch, dim, L) tensor laid out as (batch, L, directions, dim): the directions' outputs
    side by side in each token's row, so that one matmul over ``directions * dim`` inputs merges and projects them
    (``out.permute(1, 3, 0, 2).reshape(batch, L, -1)`` is a view)."""
    return torch.empty((batch, length, directions, dim), **kwargs).permute(2, 0, 3, 1)


def forward(u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, save_for_backward, gap=None,
            stacked=False, a_log=False, merged=False):
    """One or two directions of the scan (lists, one entry per direction; z an empty list for no gate).

    u, delta, z: (batch, dim, L), one dtype; B, C: (batch, G, N, L); A (dim, N), D and delta_bias (dim,) float32.
    Any strides: u and delta are read in u's layout (contiguous or channels-last, see :func:`channels_last`; delta
    is copied to it if it differs), z, B and C as they are. The outputs are in u's layout. Returns (outs,
    last_states, saved): saved holds the checkpoints of the backward. ``gap``: optional list of (batch, L) counts
    of pruned steps before each step (see the kernel; zoh, and no backward: the autograd path uses gap_form).
    ``stacked``: return the (directions, ...) tensors instead of lists (the direct inference call). ``a_log``: A
    holds log(-A) (a model's A_log parameter); with it, A, D and delta_bias may have any float dtype (the direct
    inference call passes a model's parameters as they are; no backward). ``merged``: the outputs in
    :func:`merged_rows`' layout instead of u's.
    """
    _check(u, B)
    if gap is not None and (method != 'zoh' or save_for_backward):
        raise ValueError(f"mmssm triton scan: gap is an inference option of the zoh scan, got method {method!r} "
                         f"and save_for_backward={save_for_backward}; use gap_form for the autograd path.")
    u, delta, B, C, z, cl = _layouts(u, delta, B, C, z)
    A = _same_strides(list(A))
    directions = len(u)
    batch, dim, length = u[0].shape
    groups, state = B[0].shape[1], A[0].shape[1]
    method_index, k = _method_constants(method)
    if merged:
        out = merged_rows(directions, batch, dim, length, device=u[0].device, dtype=u[0].dtype)
    else:
        out = new_rows(directions, batch, dim, length, cl, device=u[0].device, dtype=u[0].dtype)
    last = torch.empty((directions, batch, dim, state), device=u[0].device, dtype=torch.float32)
    n_ckpt = checkpoint_count(length) if save_for_backward else 0
    ckpt = torch.empty((directions, batch, dim, n_ckpt, state), device=u[0].device, dtype=torch.float32)
    has_z = len(z) > 0
    z_first = z[0] if has_z else u[0]
    n_pad = max(2, next_power_of_2(state))
    common = dict(N=state, N_PAD=n_pad, CKPT_L=CHECKPOINT_L, METHOD=method_index, K=k, HAS_Z=has_z,
                  SOFTPLUS=bool(softplus), SAVE=n_ckpt > 0,
                  SOFTPLUS_LOG=SOFTPLUS_LOG_SAVED and n_ckpt > 0 and n_pad >= 16)
    offsets = (_offset(u), _offset(delta), _offset(z) if has_z else 0, _offset(A), _offset(B), _offset(C),
               _offset(D), _offset(delta_bias), out.stride(0), int(reverse[0]), int(reverse[-1]), *u[0].stride(),
               *(z_first.stride()), *out.stride()[1:], *B[0].stride(), *A[0].stride())
    per_group = dim // groups
    chunk_len = forward_chunk_length(batch, dim, directions, length)
    args = (u[0], delta[0], z_first, A[0], B[0], C[0], D[0], delta_bias[0], out, last, ckpt)
    if a_log:
        if save_for_backward:
            raise ValueError('mmssm triton scan: a_log is an inference option (no backward through A_log here).')
        common['A_LOG'] = True
    if gap is not None:
        common['GAP'] = True
        gap = torch.stack([g.to(torch.float32) for g in gap])  # (directions, batch, L), a few KB
    ext = _strided_extension(FWD_CUDA_ZOH, method, chunk_len >= length and gap is None, u[0],
                             (delta[0], B[0], C[0], *z[:1]), per_group, state)
    if ext is not None:
        A = _same_strides([a.float() for a in A])
        ext.zoh_fwd_strided(u, delta, A, B, C, [t.float().contiguous() for t in D],
                            [t.float().contiguous() for t in delta_bias], z, bool(softplus), [bool(r) for r in reverse],
                            a_log, list(out.unbind(0)), list(last.unbind(0)), list(ckpt.unbind(0)))
    elif chunk_len >= length:
        largest = FWD_BLOCK_D if method == 'zoh' else min(FWD_BLOCK_D, FWD_BLOCK_D_METHODS)
        block_d = _block_d(per_group, batch, dim, directions, largest=largest, programs=FWD_PROGRAMS)
        _scan_fwd_seq_kernel[(batch * dim // block_d, 1, directions)](
            *args, last, last, last, last if gap is None else gap, *offsets, batch, dim, length, per_group, groups,
            n_ckpt, length, 1,
            BLOCK_D=block_d, PHASE=0, **common, num_warps=FWD_WARPS)
    else:
        block_d = _block_d(per_group, batch, dim, directions, largest=FWD_BLOCK_D, programs=FWD_PROGRAMS // 4)
        n_chunks = -(-length // chunk_len)
        buffers = [torch.empty((directions, batch, dim, state, n_chunks), device=u[0].device, dtype=torch.float32)
                   for _ in range(3)]  # start states, chunk-local end states, products of A_bar
        grid = (batch * dim // block_d, n_chunks, directions)
        scalars = (batch, dim, length, per_group, groups, n_ckpt, chunk_len, n_chunks)
        gap_arg = buffers[0] if gap is None else gap
        _scan_fwd_seq_kernel[grid](*args, *buffers, gap_arg, *offsets, *scalars, BLOCK_D=block_d, PHASE=1,
                                   **common, num_warps=FWD_WARPS)
        total = directions * batch * dim * state
        _scan_combine_kernel[(cdiv(total, 256),)](*buffers, buffers[0], total, n_chunks, BLOCK=256)
        _scan_fwd_seq_kernel[grid](*args, *buffers, gap_arg, *offsets, *scalars, BLOCK_D=block_d, PHASE=2,
                                   **common, num_warps=FWD_WARPS)
    if stacked:
        return out, last, ckpt
    return list(out.unbind(0)), list(last.unbind(0)), list(ckpt.unbind(0))


def _split_length(name: str, forced, block_d: int, programs: int, minimum: int, batch: int, dim: int,
                  directions: int, length: int) -> int:
    """segments.split_length in pieces of whole checkpoint chunks (CHECKPOINT_L)."""
    return split_length(f'triton_scan.{name}', forced, CHECKPOINT_L, block_d, programs, minimum, batch, dim,
                        directions, length)


def forward_chunk_length(batch: int, dim: int, directions: int, length: int) -> int:
    """Steps per chunk of the chunk-parallel forward (``length``: not chunked), by :func:`_split_length` with
    FWD_BLOCK_D, FWD_PROGRAMS, FWD_MIN_CHUNK (FWD_CHUNK_L forces it)."""
    return _split_length('FWD_CHUNK_L', FWD_CHUNK_L, FWD_BLOCK_D, FWD_PROGRAMS, FWD_MIN_CHUNK, batch, dim,
                         directions, length)


def backward_segment_length(batch: int, dim: int, directions: int, length: int) -> int:
    """Steps per segment of the segment-parallel backward (``length``: one segment), by :func:`_split_length` with
    BWD_BLOCK_D, BWD_PROGRAMS, BWD_MIN_SEGMENT (BWD_SEGMENT_L forces it)."""
    return _split_length('BWD_SEGMENT_L', BWD_SEGMENT_L, BWD_BLOCK_D, BWD_PROGRAMS, BWD_MIN_SEGMENT, batch, dim,
                         directions, length)


def strided_kernels_take(method: str, state: int, per_group: int) -> bool:
    """Whether the strided zoh kernels serve this method, state size N and channels per B/C group."""
    return method == 'zoh' and 8 < state <= 16 and per_group % 32 == 0


def _strided_extension(enabled, method, whole, u, others, per_group, state):
    """The CUDA extension when its strided zoh kernels take this call (``whole``: the sequence in one piece and no
    other option; see FWD_CUDA_ZOH), else None. ``others``: the tensors that must have u's dtype (delta, B, C, z,
    dout); the binding's other requirements are met by the callers (float32 A, D, biases, states)."""
    if not (enabled and whole and strided_kernels_take(method, state, per_group)
            and u.is_cuda and u.shape[0] <= 65535 and all(t.dtype == u.dtype for t in others)
            and not _interpreting()):
        return None
    return _strided_kernels()


def _strided_kernels():
    """The CUDA extension if it is built with the strided zoh kernels (one built before them lacks them), else
    None."""
    from . import cuda_scan
    ext = cuda_scan.extension()
    return ext if ext is not None and hasattr(ext, 'zoh_bwd_strided') else None


def strided_backward_on() -> bool:
    """Whether whole-sequence zoh backwards (N 9-16, groups of a multiple of 32 channels) run the strided CUDA
    kernel: BWD_CUDA_ZOH and an extension built with it."""
    return BWD_CUDA_ZOH and _strided_kernels() is not None


def _add_pending(du, dB, pend_u, pend_B, seg_len, k, reverse, groups):
    """What each segment's first steps give to u and B at the k steps before it (the kernel stores them per
    segment), added at those steps: scan positions s - 1 .. s - k of every segment start s > 0."""
    directions, batch, dim, n_segs, _ = pend_u.shape
    length = du.shape[-1]
    starts = torch.arange(1, n_segs, device=du.device) * seg_len
    steps = (starts[:, None] - torch.arange(1, k + 1, device=du.device)[None, :]).flatten()  # (segment, j)
    state = pend_B.shape[-1]
    pend_B = pend_B.view(directions, batch, groups, -1, n_segs, 3, state).sum(3)  # over a group's blocks
    for direction in range(directions):
        index = length - 1 - steps if reverse[direction] else steps
        du[direction].index_add_(-1, index, pend_u[direction, :, :, 1:, :k].flatten(-2).to(du.dtype))
        dB[direction].index_add_(-1, index, pend_B[direction, :, :, 1:, :k].flatten(-3, -2).transpose(-1, -2))


def backward(dout, u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, saved, dlast_state):
    """Gradients of :func:`forward`: (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz) as lists."""
    _check(u, B)
    u, delta, B, C, z, cl = _layouts(u, delta, B, C, z)
    A = _same_strides(list(A))
    directions = len(u)
    batch, dim, length = u[0].shape
    groups, state = B[0].shape[1], A[0].shape[1]
    method_index, k = _method_constants(method)
    device = u[0].device
    du = new_rows(directions, batch, dim, length, cl, device=device, dtype=u[0].dtype)
    ddelta = new_rows(directions, batch, dim, length, cl, device=device, dtype=delta[0].dtype)
    has_z = len(z) > 0
    dz = new_rows(directions, batch, dim, length, cl, device=device, dtype=z[0].dtype) if has_z else du
    dA = torch.zeros((directions, dim, state), device=device, dtype=torch.float32)
    dD = torch.zeros((directions, dim), device=device, dtype=torch.float32)
    dbias = torch.zeros((directions, dim), device=device, dtype=torch.float32)
    n_ckpt = checkpoint_count(length)
    if n_ckpt and saved[0].shape[-2] != n_ckpt:
        raise RuntimeError('mmssm triton scan: the forward did not save the checkpoints its backward needs')
    dout = _same_strides(list(dout))
    has_dlast = len(dlast_state) > 0
    seg_len = backward_segment_length(batch, dim, directions, length)
    n_segs = -(-length // seg_len)
    ext = _strided_extension(BWD_CUDA_ZOH, method, n_segs == 1, u[0], (delta[0], B[0], C[0], *z[:1], dout[0]),
                             dim // groups, state)
    if ext is not None:  # the CUDA kernel: dB / dC per 32 channels, summed below
        dB, dC = (torch.empty((directions, batch, dim // 32, state, length), device=device, dtype=torch.float32)
                  for _ in range(2))
        ckpts = [t.contiguous() for t in saved] if n_ckpt else [dA.new_empty((batch, dim, 0, state))] * directions
        ext.zoh_bwd_strided(
            dout, u, delta, _same_strides([a.float() for a in A]), B, C, [t.float().contiguous() for t in D],
            [t.float().contiguous() for t in delta_bias], z, ckpts, [g.float().contiguous() for g in dlast_state],
            bool(softplus), [bool(r) for r in reverse],
            list(du.unbind(0)), list(ddelta.unbind(0)), list(dz.unbind(0)) if has_z else [], list(dA.unbind(0)),
            list(dB.unbind(0)), list(dC.unbind(0)), list(dD.unbind(0)), list(dbias.unbind(0)))
        return _gradients(du, ddelta, dA, _group_sums(dB, groups), _group_sums(dC, groups), dD, dbias, dz, has_z,
                          B[0].dtype)
    ckpt = torch.stack(saved) if n_ckpt else dA
    dlast = torch.stack([g.float() for g in dlast_state]).contiguous() if has_dlast else dA
    n_pad = max(2, next_power_of_2(state))
    common = dict(N=state, N_PAD=n_pad, METHOD=method_index, K=k, HAS_Z=has_z, SOFTPLUS=bool(softplus),
                  HAS_DLAST=has_dlast)
    offsets = (_offset(u), _offset(delta), _offset(z) if has_z else 0, _offset(A), _offset(B), _offset(C),
               _offset(D), _offset(delta_bias), _offset(dout), int(reverse[0]), int(reverse[-1]),
               *_strides(u, z, B), *dout[0].stride(), *A[0].stride())
    inputs = (u[0], delta[0], z[0] if has_z else u[0], A[0], B[0], C[0], D[0], delta_bias[0], dout[0], ckpt, dlast)
    block_d = _block_d(dim // groups, batch, dim, directions, largest=BWD_BLOCK_D,
                       programs=BWD_PROGRAMS // n_segs)
    programs = batch * dim // block_d
    blocks = dim // block_d
    partial = BWD_BC_PARTIAL and blocks // groups <= BWD_BC_PARTIAL_BLOCKS
    if partial:  # each program's dB / dC rows, summed over a group's programs below
        dB, dC = (torch.empty((directions, batch, blocks, state, length), device=device, dtype=torch.float32)
                  for _ in range(2))
    else:
        dB, dC = (torch.zeros((directions, batch, groups, state, length), device=device, dtype=torch.float32)
                  for _ in range(2))
    scratch = torch.empty((directions, n_segs, programs, CHECKPOINT_L, block_d, n_pad), device=device,
                          dtype=torch.float32)
    grads = (scratch, du, ddelta, dz, dA, dB, dC, dD, dbias)
    scalars = (batch, dim, length, dim // groups, groups, n_ckpt, cdiv(seg_len, CHECKPOINT_L), n_segs)
    launch = dict(BLOCK_D=block_d, CKPT_L=CHECKPOINT_L, **common, BC_PARTIAL=partial, num_warps=BWD_WARPS)
    if n_segs == 1:
        _scan_bwd_seq_kernel[(programs, 1, directions)](*inputs, *grads, dA, dA, dA, dA, dA, *offsets, *scalars,
                                                          PHASE=0, **launch)
    else:
        carry, local, prod = (torch.empty((directions, batch, dim, state, n_segs), device=device, dtype=torch.float32)
                              for _ in range(3))
        # what each segment but the first gives to the 3 steps before it (all written; only methods with earlier
        # samples have any)
        pend_u, pend_B = (torch.empty((directions, batch, dim, n_segs, 3), device=device, dtype=torch.float32),
                          torch.empty((directions, batch, blocks, n_segs, 3, state), device=device,
                                      dtype=torch.float32)) if k else (dA, dA)
        buffers = (carry, local, prod, pend_u, pend_B)
        grid = (programs, n_segs, directions)
        _scan_bwd_seq_kernel[grid](*inputs, *grads, *buffers, *offsets, *scalars, PHASE=1, **launch)
        total = directions * batch * dim * state
        _scan_combine_kernel[(cdiv(total, 256),)](carry, local, prod, dlast, total, n_segs, BLOCK=256, REVERSE=True,
                                                  HAS_INIT=has_dlast)
        _scan_bwd_seq_kernel[grid](*inputs, *grads, *buffers, *offsets, *scalars, PHASE=2, **launch)
    if partial:
        dB, dC = _group_sums(dB, groups), _group_sums(dC, groups)
    if n_segs > 1 and k:
        _add_pending(du, dB, pend_u, pend_B, seg_len, k, reverse, groups)
    return _gradients(du, ddelta, dA, dB, dC, dD, dbias, dz, has_z, B[0].dtype)


def _group_sums(partial, groups):
    """(directions, batch, blocks, N, L) sums per program -> (directions, batch, groups, N, L)."""
    directions, batch, blocks = partial.shape[:3]
    return partial.view(directions, batch, groups, blocks // groups, *partial.shape[3:]).sum(3)


def _gradients(du, ddelta, dA, dB, dC, dD, dbias, dz, has_z, bc_dtype):
    """backward's lists from the (directions, ...) tensors."""
    return (list(du.unbind(0)), list(ddelta.unbind(0)), list(dA.unbind(0)), list(dB.to(bc_dtype).unbind(0)),
            list(dC.to(bc_dtype).unbind(0)), list(dD.unbind(0)), list(dbias.unbind(0)),
            list(dz.unbind(0)) if has_z else [])
