import itertools
import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmssm.ops.causal_conv1d import causal_conv1d, channel_contiguous, channels_last_available, conv1d_channels_last
from mmssm.ops.eager import op_route, split_channels, unbind_parts
from mmssm.ops.fused_mixer import FusedMixerCore
from mmssm.ops.selective_scan import (
    METHODS,
    _compiled_arguments,
    available_backends,
    check_gap_steps,
    gap_form,
    selective_scan,
    selective_scan_bidirectional,
    triton_scan,
)
from mmssm.ops.selective_scan.compiled import kernel_direct
from mmssm.ops.selective_scan.compiled import scan as compiled_scan
from mmssm.registry import MODELS

from .inverted_residual import CausalInvertedResidual1d
from .precision import at_least_fp32
from .se import TokenSqueezeExcitation

CONV_TYPES = ('conv', 'inverted_residual')




def channels_last_path(scan_backend: str, hidden_states: torch.Tensor, strided_backward: bool = False) -> bool:
    """Whether a mixer runs its convolutions and scan on the (batch, L, channels) layout the matmuls produce
    (Triton kernels that read strided tensors, no transposes). Always on the Triton backend (asked for, or under
    'auto' when the CUDA extension is not built). Under 'auto' with the extension built: for inference (no
    gradient to the input), where it measured faster at every length, and for training where the extension's
    strided zoh backward takes the scan (``strided_backward``: the caller's method and sizes qualify; see
    triton_scan.strided_backward_on). There a Vim-T training step measured 1.67x the transposing path's speed
    from a CUDA graph at half its peak memory (docs/benchmarks.md); other training stays on the transposing path.
    Never for float64 or under a jit trace."""
    if hidden_states.dtype == torch.float64 or not channels_last_available(hidden_states) \
            or torch.jit.is_tracing():  # FLOP counting traces the transposing path, whose ops it counts
        return False
    if scan_backend == 'auto':
        scan_backend = os.environ.get('MMSSM_SCAN_BACKEND') or 'auto'
    if scan_backend != 'auto':
        return scan_backend == 'triton'
    first = available_backends(hidden_states.device)[0]
    if first == 'triton':
        return True
    inference = not (torch.is_grad_enabled() and hidden_states.requires_grad)
    return first == 'cuda' and (inference or (strided_backward and triton_scan.strided_backward_on()))


@MODELS.register_module()
class MambaMixer(nn.Module):
    """Mamba's selective-SSM token mixer, one-directional or bidirectional (Vim's "v2" block).

    ``in_proj`` maps C tokens to x and the gate z (``expand * C`` channels each). x goes through a short causal
    depthwise convolution and SiLU, ``x_proj`` gives the step ``dt`` (rank ``dt_rank``, expanded by ``dt_proj``)
    and the input-dependent B and C, and the selective scan (``discretization`` of the operator) gives
    ``y * silu(z)``. The bidirectional block has a second set of conv, x_proj, dt_proj, A and D that scans from the
    last token to the first; the two outputs are summed (and halved with ``divide_out``) before the shared
    ``out_proj``. Parameter names match Mamba / Vim, so their checkpoints load after a key mapping.

    Args:
        embed_dims (int): token channels C.
        d_state (int): state size N. Default: 16.
        expand (float): inner channels = expand * C. Default: 2.
        d_conv (int): short convolution kernel. Default: 4.
        dt_rank (int | 'auto'): rank of the dt projection; 'auto' is ceil(C / 16).
        dt_min, dt_max, dt_init_floor (float): range of the initial step sizes (Mamba's init).
        conv_bias (bool): bias of the short convolution. Default: True.
        bias (bool): bias of in_proj and out_proj. Default: False.
        bidirectional (bool): add the reversed scan (Vim's v2 block). Default: True.
        divide_out (bool): average the two directions instead of summing them. Default: True.
        discretization (str): one of the operator's methods ('zoh', 'foh', 'bilinear', 'poly', 'highorder',
            'rk4'). Default: 'zoh' (Mamba's).
        conv_type (str): 'conv' (Mamba's depthwise conv) or 'inverted_residual' (MobileNetV2 block in its place).
        inverted_residual_cfg (dict, optional): extra arguments of :class:`CausalInvertedResidual1d`
            (``expand_ratio``, ``norm_cfg``, ``act_cfg``).
        se_ratio (float, optional): if given, squeeze-and-excitation with this reduction ratio after the gating.
        scan_backend (str): backend of the selective scan. Default: 'auto'.
        scan_recompute (bool): in training, keep only the in_proj output for the backward and recompute the
            convolutions, projections and scans from it there (activation checkpointing of the part between in_proj
            and out_proj: less activation memory for one more forward of that part). Default: False.
        fused_training (bool): in eager training on the channels-last path, run the part between in_proj and the
            directions' merge as one autograd Function with a hand-written backward
            (:class:`~mmssm.ops.fused_mixer.FusedMixerCore`): one autograd node in place of about 45, and the
            conv outputs and deltas recomputed in the backward instead of saved (one conv kernel and one small
            matmul a direction). Same gradients, less memory and GPU time (measured in docs/benchmarks.md);
            False keeps autograd's own graph of the unfused path. Default: True.
    """

    def __init__(self, embed_dims: int, d_state: int = 16, expand: float = 2, d_conv: int = 4,
                 dt_rank='auto', dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, bidirectional: bool = True, divide_out: bool = True,
                 discretization: str = 'zoh', conv_type: str = 'conv', inverted_residual_cfg: dict | None = None,
                 se_ratio: float | None = None, scan_backend: str = 'auto', scan_recompute: bool = False,
                 fused_training: bool = True):
        super().__init__()
        if not isinstance(embed_dims, int) or embed_dims <= 0:
            raise ValueError(f'MambaMixer: embed_dims must be a positive int, got {embed_dims!r}.')
        if not isinstance(d_state, int) or d_state <= 0:
            raise ValueError(f'MambaMixer: d_state must be a positive int, got {d_state!r}.')
        if not isinstance(d_conv, int) or d_conv <= 0:
            raise ValueError(f'MambaMixer: d_conv must be a positive int, got {d_conv!r}.')
        if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not expand > 0 \
                or round(expand * embed_dims) < 1:
            raise ValueError(f'MambaMixer: expand must be a positive number with expand * embed_dims >= 1 (inner '
                             f'channels; 2 in Mamba), got expand={expand!r} for embed_dims={embed_dims}.')
        if discretization not in METHODS:
            raise ValueError(f'MambaMixer: unknown discretization {discretization!r}; choose one of {METHODS}.')
        if conv_type not in CONV_TYPES:
            raise ValueError(f'MambaMixer: unknown conv_type {conv_type!r}; choose one of {CONV_TYPES}.')
        if dt_rank == 'auto':
            dt_rank = math.ceil(embed_dims / 16)
        if not isinstance(dt_rank, int) or dt_rank <= 0:
            raise ValueError(f"MambaMixer: dt_rank must be a positive int or 'auto', got {dt_rank!r}.")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f'MambaMixer: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}.')
        self.embed_dims = embed_dims
        self.d_state = d_state
        self.d_inner = int(round(expand * embed_dims))
        self.d_conv = d_conv
        self.dt_rank = dt_rank
        self.bidirectional = bidirectional
        self.divide_out = divide_out
        self.discretization = discretization
        self.conv_type = conv_type
        self.scan_backend = scan_backend
        self.scan_recompute = bool(scan_recompute)
        self.fused_training = bool(fused_training)
        self._dt_init = (dt_min, dt_max, dt_init_floor)

        self.in_proj = nn.Linear(embed_dims, 2 * self.d_inner, bias=bias)
        self.out_proj = nn.Linear(self.d_inner, embed_dims, bias=bias)
        for suffix in ('', '_b') if bidirectional else ('',):
            if conv_type == 'conv':
                conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=conv_bias)
            else:
                conv = CausalInvertedResidual1d(self.d_inner, d_conv, reverse=suffix == '_b',
                                                **(inverted_residual_cfg or {}))
            setattr(self, f'conv1d{suffix}', conv)
            setattr(self, f'x_proj{suffix}', nn.Linear(self.d_inner, dt_rank + 2 * d_state, bias=False))
            setattr(self, f'dt_proj{suffix}', nn.Linear(dt_rank, self.d_inner, bias=True))
            a_name = 'A_log' if suffix == '' else 'A_b_log'
            setattr(self, a_name, nn.Parameter(torch.empty(self.d_inner, d_state)))
            setattr(self, f'D{suffix}', nn.Parameter(torch.empty(self.d_inner)))
        self.se = TokenSqueezeExcitation(self.d_inner, se_ratio) if se_ratio is not None else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Mamba's initialization: S4D-real A, D = 1, dt log-uniform in [dt_min, dt_max] through softplus."""
        dt_min, dt_max, dt_init_floor = self._dt_init
        for suffix in ('', '_b') if self.bidirectional else ('',):
            dt_proj = getattr(self, f'dt_proj{suffix}')
            std = self.dt_rank ** -0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_init_floor)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
            dt_proj.bias._no_reinit = True
            a_log = getattr(self, 'A_log' if suffix == '' else 'A_b_log')
            a_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand_as(a_log))
            a_log._no_weight_decay = True
            d = getattr(self, f'D{suffix}')
            d.fill_(1.0)
            d._no_weight_decay = True

    def _direction(self, x, z, suffix, reverse):
        conv = getattr(self, f'conv1d{suffix}')
        if self.conv_type == 'conv':
            x = causal_conv1d(x, conv.weight, conv.bias, activation='silu', reverse=reverse)
        else:
            x = F.silu(conv(x))
        x_dbl = getattr(self, f'x_proj{suffix}')(x.transpose(1, 2))  # (batch, L, dt_rank + 2N)
        dt, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt_proj = getattr(self, f'dt_proj{suffix}')
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)
        A = -torch.exp(at_least_fp32(getattr(self, 'A_log' if suffix == '' else 'A_b_log')))
        return dict(u=x, delta=delta.to(x.dtype), A=A, B=B.transpose(1, 2), C=C.transpose(1, 2),
                    D=at_least_fp32(getattr(self, f'D{suffix}')), delta_bias=at_least_fp32(dt_proj.bias))

    def forward(self, hidden_states: torch.Tensor, gap_steps: tuple | None = None,
                keep_mask: torch.Tensor | None = None, direction_gate: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, L, C) -> (batch, L, C).

        Args:
            hidden_states: (batch, L, C) tokens.
            gap_steps: optional pair (forward, backward) of (batch, L) counts of pruned tokens before / after each
                token (token pruning's hidden-state alignment, zoh only; see the scan's ``gap_steps``).
            keep_mask: optional (batch, L) bool; False marks a pruned token (DyVM's masked training path). Its
                input to the short convolutions is zeroed, so a kept neighbour's convolution reads it as the zero
                padding past a sequence end, and the scans step over it with the operator's ``keep_mask`` (no
                input, no output; a state that is zero stays zero). With the pruned tokens at the back, the kept
                ones get the outputs of the sequence of kept tokens alone.
            direction_gate: optional (batch, directions) float, directions = 2 if bidirectional else 1: each
                direction's scan output is scaled by its sample's gate before the sum (DyVM's block selection).
                When no gradient flows to the gate (inference), a direction gated 0 for a sample is not computed
                for it, and not at all when it is gated 0 for the whole batch.

        Without ``keep_mask`` and ``direction_gate`` this is the plain mixer, computed exactly as before.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.embed_dims:
            raise ValueError(
                f'MambaMixer: expected input of shape (batch, L, {self.embed_dims}), got {tuple(hidden_states.shape)}.')
        if gap_steps is not None and (not isinstance(gap_steps, (tuple, list)) or len(gap_steps) != 2):
            raise ValueError(f'MambaMixer: gap_steps must be a pair (forward, backward) of (batch, L) float tensors, '
                             f'got {type(gap_steps).__name__}.')
        channels_last = keep_mask is None and direction_gate is None and self._channels_last_path(hidden_states)
        xz = self.in_proj(hidden_states)  # (batch, L, 2 * d_inner)
        mix = self._channels_last_scan if channels_last else self._transposing_scan
        if self.scan_recompute and torch.is_grad_enabled() and xz.requires_grad:
            y = checkpoint(mix, xz, gap_steps, keep_mask, direction_gate, use_reentrant=False)
        else:
            y = mix(xz, gap_steps, keep_mask, direction_gate)
        if y.shape[-1] != self.d_inner:  # both directions side by side: out_proj merges them (see _merged_weight)
            return F.linear(y, self._merged_weight(), self.out_proj.bias)
        return self.out_proj(y)

    def _mergeable(self, xz) -> bool:
        """Whether out_proj merges the two directions: in inference only (in training it would save both
        directions' outputs for its weight gradient, twice the lerp's output: docs/benchmarks.md), with a plain
        weight and no hooks (it is not called as a module then)."""
        out_proj = self.out_proj
        return self.bidirectional and type(out_proj) is nn.Linear and type(out_proj.weight) is nn.Parameter \
            and not (out_proj._forward_hooks or out_proj._forward_pre_hooks) \
            and not (torch.is_grad_enabled() and (xz.requires_grad or out_proj.weight.requires_grad))

    def _merged_weight(self) -> torch.Tensor:
        """out_proj's weight for both directions' outputs side by side, [W, W] (halved with divide_out): one matmul
        sums (averages) and projects them, in place of a merge kernel and a matmul (inference, see
        :meth:`_mergeable`). Kept between eager calls while the weight is unchanged (its version counter);
        formed anew when compiling and inside a CUDA graph capture (so that a replay reads the weight as it is
        then)."""
        weight = self.out_proj.weight

        def merged():
            both = torch.cat([weight, weight], dim=1)
            return both * 0.5 if self.divide_out else both

        if torch.compiler.is_compiling() or (weight.is_cuda and torch.cuda.is_current_stream_capturing()):
            return merged()
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, self.divide_out)
        cached = self.__dict__.get('_merged_cache')
        if cached is None or cached[0] != key:
            cached = self.__dict__['_merged_cache'] = key, merged()
        return cached[1]

    def _fusable(self, xz, suffixes) -> bool:
        """Whether :class:`FusedMixerCore` runs this call: eager training (autograd reaches the mixer, nothing
        compiling, tracing or watching; :func:`op_route`), plain bias-free x_proj Linears without hooks (they are
        not called as modules there), dt_proj biases, and plain Parameter weights of both (not 2:4 sparse)."""
        if op_route(itertools.chain((xz,), self.parameters())) != 'function':
            return False
        for suffix in suffixes:
            x_proj, dt_proj = getattr(self, f'x_proj{suffix}'), getattr(self, f'dt_proj{suffix}')
            if type(x_proj) is not nn.Linear or x_proj.bias is not None or x_proj._forward_hooks \
                    or x_proj._forward_pre_hooks or dt_proj.bias is None \
                    or not all(type(w) is nn.Parameter for w in (x_proj.weight, dt_proj.weight)):
                return False
        return True

    def _transposing_scan(self, xz, gap_steps, keep_mask, direction_gate):
        """The mixer between in_proj and out_proj on (batch, channels, L) tensors. -> (batch, L, d_inner)."""
        x, z = xz.transpose(1, 2).chunk(2, dim=1)
        if keep_mask is None and direction_gate is None:
            y = self._dense_scan(x, z, gap_steps)
        else:
            y = self._selected_scan(x, z, gap_steps, keep_mask, direction_gate)
        if self.se is not None:
            y = self.se(y)
        return y.transpose(1, 2)

    def _channels_last_path(self, hidden_states) -> bool:
        """Whether the dense forward runs channels-last (:meth:`_channels_last_scan`): with the plain conv and no
        SE, where :func:`channels_last_path` says so."""
        strided = triton_scan.strided_kernels_take(self.discretization, self.d_state, self.d_inner)
        return self.conv_type == 'conv' and self.se is None and channels_last_path(self.scan_backend, hidden_states,
                                                                                   strided)

    def _channels_last_scan(self, xz, gap_steps=None, keep_mask=None, direction_gate=None):
        """The dense mixer before out_proj without layout copies: every tensor stays in the (batch, L, channels)
        layout the matmuls produce. Both short convolutions (+ SiLU) in one Triton kernel reading the x half of the
        in_proj output; x_proj and dt_proj on their outputs; both scans in one launch reading u, delta, B, C and the
        z half in place and writing channels-last (with ``gap_steps``, of their :func:`gap_form`). Same function as
        the transposing path. xz: the in_proj output; keep_mask and direction_gate must be None.
        -> (batch, L, d_inner), or for two directions where out_proj can merge them (:meth:`_merged_weight`) both
        side by side, (batch, L, 2 * d_inner), as the scan writes them."""
        d_inner, rank, state = self.d_inner, self.dt_rank, self.d_state
        xz = channel_contiguous(xz)  # (batch, L, 2 * d_inner)
        suffixes = ('', '_b') if self.bidirectional else ('',)
        directions = len(suffixes)
        if self.fused_training and gap_steps is None and self._fusable(xz, suffixes):
            outs = FusedMixerCore.apply(
                (d_inner, rank, state, ['reverse' if s == '_b' else 'causal' for s in suffixes],
                 [s == '_b' for s in suffixes], self.discretization), xz,
                *[getattr(self, f'conv1d{suffix}').weight for suffix in suffixes],
                *[getattr(self, f'conv1d{suffix}').bias for suffix in suffixes],
                *[getattr(self, f'{name}{suffix}').weight for name in ('x_proj', 'dt_proj') for suffix in suffixes],
                *[getattr(self, 'A_log' if suffix == '' else 'A_b_log') for suffix in suffixes],
                *[getattr(self, f'D{suffix}') for suffix in suffixes],
                *[getattr(self, f'dt_proj{suffix}').bias for suffix in suffixes])
            if not self.bidirectional:
                return outs[0].transpose(1, 2)
            y = torch.lerp(outs[0], outs[1], 0.5) if self.divide_out else outs[0] + outs[1]
            return y.transpose(1, 2)
        halves = split_channels(xz, (d_inner, d_inner), directions)  # x and z, once per direction
        xs, zs = halves[:directions], [z.transpose(1, 2) for z in halves[directions:]]
        convs = [getattr(self, f'conv1d{suffix}') for suffix in suffixes]
        us = conv1d_channels_last(xs, [c.weight for c in convs], [c.bias for c in convs],
                                  ['reverse' if suffix == '_b' else 'causal' for suffix in suffixes], activation='silu')
        args = []
        # inference: the kernel takes the parameters as they are (A_log, D and the dt bias in the model's dtype)
        # and the gaps; with autograd, A = -exp(A_log) in float32 and gap_form's plain-scan inputs
        direct = kernel_direct('triton', itertools.chain((xz,), self.parameters())) and all(
            getattr(self, f'dt_proj{suffix}').bias is not None for suffix in suffixes)
        in_kernel = gap_steps is not None and direct
        parts = unbind_parts(us, 2)  # each direction's u for x_proj and for the scan
        for index, suffix in enumerate(suffixes):
            u = parts[2 * index + 1]
            dt, B, C = split_channels(getattr(self, f'x_proj{suffix}')(parts[2 * index]), (rank, state, state))
            dt_proj = getattr(self, f'dt_proj{suffix}')
            delta = F.linear(dt, dt_proj.weight).to(u.dtype).transpose(1, 2)  # (batch, d_inner, L) view
            B, C, delta_bias = B.transpose(1, 2), C.transpose(1, 2), dt_proj.bias
            A_log, D = getattr(self, 'A_log' if suffix == '' else 'A_b_log'), getattr(self, f'D{suffix}')
            if direct:
                if in_kernel:
                    check_gap_steps(gap_steps[index], delta, self.discretization)
                args.append((u.transpose(1, 2), delta, A_log, B.unsqueeze(1), C.unsqueeze(1), D, delta_bias))
                continue
            delta_bias = at_least_fp32(delta_bias)
            if gap_steps is not None:
                delta, B = gap_form(delta, B, delta_bias, True, gap_steps[index], self.discretization)
                delta_bias = None
            args.append(_compiled_arguments(u.transpose(1, 2), delta, -torch.exp(at_least_fp32(A_log)), B, C,
                                            at_least_fp32(D), delta_bias, 'triton'))
        # the backend directly (its arguments as the public functions build them): these inputs are valid by
        # construction, so those functions' checks (host time on every call of the hot path) are skipped; both
        # directions in one launch
        gaps = list(gap_steps[:len(suffixes)]) if in_kernel else None
        merged = self._mergeable(xz)
        out, _ = compiled_scan('triton', *[list(group) for group in zip(*args)], list(zs),
                               gap_steps is None or in_kernel, self.discretization,
                               [suffix == '_b' for suffix in suffixes], gap=gaps, a_log=direct, merged=merged)
        if merged:  # (directions, batch, d_inner, L) laid out as (batch, L, directions, d_inner)
            return out.permute(1, 3, 0, 2).reshape(xz.shape)
        if self.bidirectional:
            y = torch.lerp(out[0], out[1], 0.5) if self.divide_out else out[0] + out[1]  # the mean in one kernel
        else:
            y = out[0]
        return y.transpose(1, 2)

    def _dense_scan(self, x, z, gap_steps):
        forward_args = self._direction(x, z, '', reverse=False)
        if self.bidirectional:
            backward_args = self._direction(x, z, '_b', reverse=True)
            pairs = {k: (forward_args[k], backward_args[k]) for k in forward_args}
            y_f, y_b = selective_scan_bidirectional(**pairs, z=z.contiguous(), delta_softplus=True,
                                                    discretization=self.discretization, backend=self.scan_backend,
                                                    gap_steps=gap_steps)
            y = y_f + y_b
            if self.divide_out:
                y = y * 0.5
        else:
            y = selective_scan(**forward_args, z=z.contiguous(), delta_softplus=True,
                               discretization=self.discretization, backend=self.scan_backend,
                               gap_steps=None if gap_steps is None else gap_steps[0])
        return y

    def _check_selection(self, x, gap_steps, keep_mask, direction_gate):
        batch, length = x.shape[0], x.shape[-1]
        if keep_mask is not None:
            if not isinstance(keep_mask, torch.Tensor) or keep_mask.dtype != torch.bool \
                    or tuple(keep_mask.shape) != (batch, length):
                raise ValueError(f'MambaMixer: keep_mask must be a bool tensor of shape (batch, L) = '
                                 f'{(batch, length)}, got {getattr(keep_mask, "dtype", type(keep_mask).__name__)} '
                                 f'{tuple(getattr(keep_mask, "shape", ()))}.')
            if gap_steps is not None:
                raise ValueError('MambaMixer: give keep_mask (pruned tokens kept in the sequence) or gap_steps (pruned '
                                 'tokens removed), not both.')
        if direction_gate is not None:
            directions = 2 if self.bidirectional else 1
            if not isinstance(direction_gate, torch.Tensor) or not direction_gate.is_floating_point() \
                    or tuple(direction_gate.shape) != (batch, directions):
                raise ValueError(f'MambaMixer: direction_gate must be a float tensor of shape (batch, directions) = '
                                 f'{(batch, directions)} (directions: 2 bidirectional, 1 otherwise), got '
                                 f'{getattr(direction_gate, "dtype", type(direction_gate).__name__)} '
                                 f'{tuple(getattr(direction_gate, "shape", ()))}.')

    def _selected_scan(self, x, z, gap_steps, keep_mask, direction_gate):
        """The scans with pruned tokens (``keep_mask``) and / or gated directions (``direction_gate``)."""
        self._check_selection(x, gap_steps, keep_mask, direction_gate)
        if keep_mask is not None:
            x = x * keep_mask.unsqueeze(1).to(x.dtype)
        directions = [('', False), ('_b', True)] if self.bidirectional else [('', False)]
        gaps = (None, None) if gap_steps is None else tuple(gap_steps)
        # per direction: None (every sample) or the indices of the samples that need it (empty: skip it)
        samples = [None] * len(directions)
        if direction_gate is not None and not (direction_gate.requires_grad and torch.is_grad_enabled()):
            for index in range(len(directions)):
                on = direction_gate[:, index] != 0
                if not bool(on.all()):
                    samples[index] = on.nonzero().squeeze(1)
        if self.bidirectional and samples == [None, None]:
            forward_args = self._direction(x, z, '', reverse=False)
            backward_args = self._direction(x, z, '_b', reverse=True)
            pairs = {k: (forward_args[k], backward_args[k]) for k in forward_args}
            outputs = selective_scan_bidirectional(
                **pairs, z=z.contiguous(), delta_softplus=True, discretization=self.discretization,
                backend=self.scan_backend, gap_steps=gap_steps, keep_mask=keep_mask)
        else:
            outputs = [self._one_direction(x, z, suffix, reverse, gaps[index], keep_mask, samples[index])
                       for index, (suffix, reverse) in enumerate(directions)]
        y = None
        for index, y_d in enumerate(outputs):
            if y_d is None:
                continue
            if direction_gate is not None:
                y_d = y_d * direction_gate[:, index, None, None].to(y_d.dtype)
            y = y_d if y is None else y + y_d
        if y is None:  # every direction gated off for every sample
            y = z.new_zeros(z.shape)
        if self.bidirectional and self.divide_out:
            y = y * 0.5
        return y

    def _one_direction(self, x, z, suffix, reverse, gap_steps, keep_mask, samples):
        """One direction's scan output, computed for ``samples`` only (None: all; empty: None, not computed)."""
        batch = x.shape[0]
        if samples is not None:
            if samples.numel() == 0:
                return None
            x, z = x[samples], z[samples]
            gap_steps = None if gap_steps is None else gap_steps[samples]
            keep_mask = None if keep_mask is None else keep_mask[samples]
        args = self._direction(x, z, suffix, reverse=reverse)
        y = selective_scan(**args, z=z.contiguous(), delta_softplus=True, discretization=self.discretization,
                           reverse=reverse, backend=self.scan_backend, gap_steps=gap_steps, keep_mask=keep_mask)
        if samples is None:
            return y
        full = y.new_zeros((batch,) + tuple(y.shape[1:]))
        return full.index_copy(0, samples, y)

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, d_inner={self.d_inner}, d_state={self.d_state}, '
                f'bidirectional={self.bidirectional}, discretization={self.discretization!r}, '
                f'conv_type={self.conv_type!r}, se={self.se is not None}')
