"""S4D (Gu et al., "On the Parameterization and Initialization of Diagonal State Space Models", 2022) as the SSM
of MambaVision's mixer."""
import math

import torch
from torch import nn

from mmssm.registry import MODELS

from .split_conv_mixer import SplitConvMixer, complex_dtype_of

S4D_INITS = ('lin', 'inv')


def s4d_kernel(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, length: int) -> torch.Tensor:
    """ZOH convolution kernel of a diagonal SSM, by Vandermonde product.

    Args:
        dt: (H,) real steps. A: (H, N) complex, real parts < 0. B: (H, N) complex. C: (..., H, N) complex.
        length: L.

    Returns:
        (..., H, L) real: ``K[l] = Re(sum_n C_n B_n (exp(dt A_n) - 1) / A_n exp(dt A_n)^l)``.
    """
    dtA = dt.unsqueeze(-1) * A
    coefficient = C * (B * torch.expm1(dtA) / A)
    steps = torch.arange(length, device=A.device, dtype=dt.dtype)
    vandermonde = torch.exp(dtA.unsqueeze(-1) * steps)  # (H, N, L)
    return torch.einsum('...hn,hnl->...hl', coefficient, vandermonde).real


def fft_convolve(u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Causal convolution ``y[t] = sum_{l <= t} K[l] u[t - l]`` of u (..., H, L) with K (H, L), by FFT of length 2L
    (no wrap-around)."""
    length = u.shape[-1]
    spectrum = torch.fft.rfft(u, n=2 * length) * torch.fft.rfft(kernel, n=2 * length)
    return torch.fft.irfft(spectrum, n=2 * length)[..., :length]


@MODELS.register_module()
class S4DMixer(SplitConvMixer):
    """MambaVision's mixer with a bidirectional S4D convolution in place of the selective scan.

    Each of the H = d_inner / 2 channels of the x half is a diagonal SSM with N complex states: ``A = -exp(A_log)
    + i A_imag``, per-channel complex B, a learned step ``dt = exp(log_dt)``, ZOH discretization. Being linear
    time-invariant, it is a convolution with the kernel :func:`s4d_kernel`, applied by FFT. For images, which have
    no direction, it runs both ways: the forward kernel (output C[0]) on the sequence and the backward kernel
    (output C[1]) on the flipped sequence, flipped back, summed with ``D * x``. Both directions include the current
    token (lag 0). A, B and dt are shared by the two directions (as S4's bidirectional layers share them).

    Complex parameters are stored as real tensors (``torch.view_as_real``), so optimizers, weight decay filters and
    float64 conversion treat them as ordinary parameters; the SSM runs in complex64, or complex128 in a float64
    model.

    Args:
        embed_dims (int): token channels C.
        d_state (int): complex states N per channel. Default: 8.
        d_conv (int): kernel of the two depthwise convolutions. Default: 3.
        expand (float): ``d_inner = int(expand * C)``. Default: 1.
        dt_min, dt_max (float): the initial steps are log-uniform in [dt_min, dt_max] (S4D's).
        init (str): 'lin' (S4D-Lin, ``A_n = -1/2 + i pi n``) or 'inv' (S4D-Inv, ``A_n = -1/2 + i N/pi (N/(2n+1)
            - 1)``). Default: 'lin'.
        conv_bias, bias (bool): biases of the convolutions / of in_proj and out_proj. Default: False.
        discretization (str): only 'zoh' (accepted so that MambaVision's settings pass through).
    """

    def __init__(self, embed_dims: int, d_state: int = 8, d_conv: int = 3, expand: float = 1, dt_min: float = 0.001,
                 dt_max: float = 0.1, init: str = 'lin', conv_bias: bool = False, bias: bool = False,
                 discretization: str = 'zoh'):
        super().__init__(embed_dims, d_state, d_conv, expand, dt_min, dt_max, conv_bias, bias, discretization)
        if init not in S4D_INITS:
            raise ValueError(f'S4DMixer: unknown init {init!r}; choose one of {S4D_INITS}.')
        self.init = init
        half = self.d_inner // 2
        self.log_dt = nn.Parameter(torch.empty(half))
        self.A_log = nn.Parameter(torch.empty(half, d_state))  # A.real = -exp(A_log) stays negative: stable
        self.A_imag = nn.Parameter(torch.empty(half, d_state))
        self.B = nn.Parameter(torch.empty(half, d_state, 2))
        self.C = nn.Parameter(torch.empty(2, half, d_state, 2))  # forward, backward
        self.D = nn.Parameter(torch.empty(half))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """S4D's initialization: A by S4D-Lin or S4D-Inv, B = 1, C complex normal (variance 1), D = 1."""
        dt_min, dt_max = self.dt_range
        self.log_dt.copy_(torch.rand_like(self.log_dt) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.A_log.fill_(math.log(0.5))
        n = torch.arange(self.d_state, dtype=torch.float64)
        if self.init == 'lin':
            imag = math.pi * n  # Fourier frequencies: S4D-Lin approximates S4-FouT
        else:
            imag = self.d_state / math.pi * (self.d_state / (2 * n + 1) - 1)  # approximates S4-LegS
        self.A_imag.copy_(imag.expand_as(self.A_imag))
        self.B.copy_(torch.view_as_real(torch.ones(self.B.shape[:-1], dtype=torch.complex64)))
        self.C.copy_(torch.view_as_real(torch.randn(self.C.shape[:-1], dtype=torch.complex64)))
        self.D.fill_(1.0)
        for param in (self.log_dt, self.A_log, self.A_imag, self.D):
            param._no_weight_decay = True

    def ssm_parameters(self, dtype: torch.dtype):
        """(dt (H,), A (H, N), B (H, N), C (2, H, N), D (H,)) in the SSM's real ``dtype`` and its complex dtype."""
        cdtype = complex_dtype_of(dtype)
        dt = torch.exp(self.log_dt.to(dtype))
        A = torch.complex(-torch.exp(self.A_log.to(dtype)), self.A_imag.to(dtype))
        B = torch.view_as_complex(self.B.to(dtype).contiguous()).to(cdtype)
        C = torch.view_as_complex(self.C.to(dtype).contiguous()).to(cdtype)
        return dt, A, B, C, self.D.to(dtype)

    def ssm(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, H, L) -> (batch, H, L): the bidirectional S4D convolution plus ``D * x``."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        u = x.to(dtype)
        dt, A, B, C, D = self.ssm_parameters(dtype)
        kernel = s4d_kernel(dt, A, B, C, u.shape[-1])  # (2, H, L)
        y = fft_convolve(u, kernel[0]) + fft_convolve(u.flip(-1), kernel[1]).flip(-1) + D.unsqueeze(-1) * u
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', init={self.init!r}'
