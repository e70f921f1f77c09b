import itertools
import math

import torch
from torch import nn

from mmssm.ops.causal_conv1d import channel_contiguous, conv1d_channels_last
from mmssm.ops.eager import split_channels
from mmssm.ops.selective_scan import METHODS, selective_scan
from mmssm.ops.selective_scan.compiled import kernel_direct
from mmssm.ops.selective_scan.compiled import scan as compiled_scan
from mmssm.registry import MODELS

from .mamba_mixer import channels_last_path
from .precision import at_least_fp32
from .split_conv_mixer import SplitConvMixer


@MODELS.register_module()
class MambaVisionMixer(SplitConvMixer):
    """MambaVision's token mixer (Hatamizadeh & Kautz, CVPR 2025): half the channels go through a selective scan,
    the other half through a symmetric path without SSM, and the two halves are concatenated.

    ``in_proj`` maps C tokens to ``expand * C`` channels, split into x and z (``d_inner / 2`` each). Both halves
    get a depthwise convolution that is *not* causal (``padding='same'``: the tokens are a 2-D window, with no
    direction to respect) and SiLU. x then feeds the selective scan of the operator (``discretization``), with
    ``dt``, B and C from ``x_proj``; z is not gated into the scan but concatenated to its output, and
    ``out_proj`` maps the ``d_inner`` channels back to C. Parameter names are the official ones.

    The step bias is counted twice, as in the official code, whose checkpoints were trained so: ``dt_proj`` is
    applied with its bias, and the same bias is passed again to the scan as ``delta_bias``, so
    ``delta = softplus(W_dt dt + 2 b_dt)``.

    Args:
        embed_dims (int): token channels C.
        d_state (int): state size N. Default: 8 (MambaVision's).
        d_conv (int): kernel of the two depthwise convolutions. Default: 3.
        expand (float): ``d_inner = int(expand * C)``, split in two halves. Default: 1.
        dt_rank (int | 'auto'): rank of the dt projection; 'auto' is ceil(C / 16).
        dt_min, dt_max, dt_init_floor (float): range of the initial step sizes (Mamba's init of ``dt_proj.bias``;
            the MambaVision backbone's official init later sets that bias to zero).
        conv_bias (bool): biases of the convolutions. Default: False (the official code asks for
            ``conv_bias // 2``, which is 0).
        bias (bool): biases of in_proj and out_proj. Default: False.
        discretization (str): one of the operator's methods ('zoh', 'foh', 'bilinear', 'poly', 'highorder',
            'rk4'). Default: 'zoh' (Mamba's, which loads the official weights unchanged).
        scan_backend (str): backend of the selective scan. Default: 'auto'.
    """

    def __init__(self, embed_dims: int, d_state: int = 8, d_conv: int = 3, expand: float = 1, dt_rank='auto',
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4, conv_bias: bool = False,
                 bias: bool = False, discretization: str = 'zoh', scan_backend: str = 'auto'):
        super().__init__(embed_dims, d_state, d_conv, expand, dt_min, dt_max, conv_bias, bias, discretization)
        if dt_rank == 'auto':
            dt_rank = math.ceil(embed_dims / 16)
        if not isinstance(dt_rank, int) or dt_rank <= 0:
            raise ValueError(f"MambaVisionMixer: dt_rank must be a positive int or 'auto', got {dt_rank!r}.")
        self.dt_rank = dt_rank
        self.scan_backend = scan_backend
        self.dt_init_floor = dt_init_floor
        half = self.d_inner // 2
        self.x_proj = nn.Linear(half, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, half, bias=True)
        self.A_log = nn.Parameter(torch.empty(half, d_state))
        self.D = nn.Parameter(torch.empty(half))
        self.reset_parameters()

    def _check_discretization(self, discretization):
        if discretization not in METHODS:
            raise ValueError(f'MambaVisionMixer: unknown discretization {discretization!r}; choose one of {METHODS}.')

    @torch.no_grad()
    def reset_parameters(self):
        """Mamba's initialization: S4D-real A, D = 1, dt log-uniform in [dt_min, dt_max] through softplus."""
        dt_min, dt_max = self.dt_range
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner // 2) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=self.dt_init_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).expand_as(self.A_log))
        self.A_log._no_weight_decay = True
        self.D.fill_(1.0)
        self.D._no_weight_decay = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, L, C) -> (batch, L, C). On the Triton backend without layout copies (see
        :func:`channels_last_path`): both 'same' convolutions + SiLU in one kernel reading the halves of the
        in_proj output, the scan on the channels-last x half; otherwise as :class:`SplitConvMixer`."""
        if not channels_last_path(self.scan_backend, hidden_states) or hidden_states.dim() != 3 \
                or hidden_states.shape[-1] != self.embed_dims:
            return super().forward(hidden_states)  # (which also reports a bad shape)
        xz = channel_contiguous(self.in_proj(hidden_states))  # (batch, L, d_inner)
        half = self.d_inner // 2
        x, z = conv1d_channels_last(list(split_channels(xz, (half, half))),
                                    [self.conv1d_x.weight, self.conv1d_z.weight],
                                    [self.conv1d_x.bias, self.conv1d_z.bias], ['same', 'same'],
                                    activation='silu').unbind(0)
        y = self.ssm(x.transpose(1, 2), backend='triton')  # the strided scan (auto might pick the CUDA extension)
        return self.out_proj(torch.cat([y.transpose(1, 2), z], dim=-1))

    def ssm(self, x: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        """The selective scan of the x half, (batch, d_inner / 2, L) -> same shape (and layout, on Triton), on
        ``backend`` (default: the mixer's ``scan_backend``)."""
        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, L, dt_rank + 2N)
        dt, B, C = split_channels(x_dbl, (self.dt_rank, self.d_state, self.d_state))
        delta = self.dt_proj(dt).transpose(1, 2)  # with its bias, as the official code (and delta_bias below)
        backend = backend or self.scan_backend
        if kernel_direct(backend, itertools.chain((x,), self.parameters())):
            # inference: the kernel directly, on the parameters as they are (nothing computed from them per call)
            out, _ = compiled_scan('triton', [x], [delta.to(x.dtype)], [self.A_log], [B.transpose(1, 2)[:, None]],
                                   [C.transpose(1, 2)[:, None]], [self.D], [self.dt_proj.bias], [], True,
                                   self.discretization, [False], a_log=True)
            return out[0]
        return selective_scan(
            x, delta.to(x.dtype), -torch.exp(at_least_fp32(self.A_log)), B.transpose(1, 2), C.transpose(1, 2),
            D=at_least_fp32(self.D), z=None, delta_bias=at_least_fp32(self.dt_proj.bias), delta_softplus=True,
            discretization=self.discretization, backend=backend)

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, dt_rank={self.dt_rank}, discretization={self.discretization!r}'
