"""S5 (Smith, Warrington & Linderman, "Simplified State Space Layers for Sequence Modeling", ICLR 2023) as the SSM
of MambaVision's mixer."""
import math

import torch
from torch import nn

from mmssm.registry import MODELS

from .split_conv_mixer import SplitConvMixer, complex_dtype_of


def hippo_legs_normal_eig(state_size: int):
    """Eigen-decomposition of the normal part of HiPPO-LegS (S5's initialization), in float64.

    HiPPO-LegS is ``A = S - p p^T`` with ``p_n = sqrt(n + 1/2)`` and S normal: ``-1/2`` on its diagonal and skew
    elsewhere, so its eigenvalues are ``-1/2 + i w`` and its eigenvectors V are unitary. Returns (Lambda (P,),
    V (P, P)), complex128; the real parts are set to the exact -1/2 of the diagonal (``eig`` leaves rounding there).
    """
    n = torch.arange(state_size, dtype=torch.float64)
    root = torch.sqrt(2 * n + 1)
    legs = -torch.tril(root[:, None] * root[None, :], diagonal=-1) - torch.diag(n + 1)
    p = torch.sqrt(n + 0.5)
    normal = legs + p[:, None] * p[None, :]
    eigenvalues, eigenvectors = torch.linalg.eig(normal)
    Lambda = torch.complex(torch.full_like(n, -0.5), eigenvalues.imag)
    return Lambda, eigenvectors


def linear_recurrence_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """All states of ``x_k = a_k * x_{k-1} + b_k`` (``x_{-1} = 0``) by a Hillis-Steele parallel scan: log2(L)
    rounds of complex multiply-adds over the whole sequence.

    Args:
        a: (..., L, P), broadcastable to b (e.g. (L, P) or (1, P) for a time-invariant system).
        b: (..., L, P).

    Returns:
        (..., L, P): x_0 .. x_{L-1}.
    """
    length = b.shape[-2]
    a = a.expand(*a.shape[:-2], length, a.shape[-1])
    offset = 1
    while offset < length:
        # element k absorbs the pair ending at k - offset: (a_k, b_k) o (a_j, b_j) = (a_k a_j, a_k b_j + b_k)
        b = torch.cat([b[..., :offset, :], a[..., offset:, :] * b[..., :-offset, :] + b[..., offset:, :]], dim=-2)
        a = torch.cat([a[..., :offset, :], a[..., offset:, :] * a[..., :-offset, :]], dim=-2)
        offset *= 2
    return b


@MODELS.register_module()
class S5Mixer(SplitConvMixer):
    """MambaVision's mixer with a bidirectional S5 layer in place of the selective scan.

    All H = d_inner / 2 channels of the x half drive one MIMO diagonal SSM of P complex states: ``Lambda = -exp(
    Lambda_log) + i Lambda_imag`` (P,), B (P, H), C (H, P), a learned step per state ``dt = exp(log_dt)``, ZOH:
    ``Lambda_bar = exp(Lambda dt)``, ``B_bar = (Lambda_bar - 1) / Lambda * B``, ``x_k = Lambda_bar x_{k-1} + B_bar
    u_k``, ``y_k = Re(C x_k) + D u_k``, run by :func:`linear_recurrence_scan`. For images it runs both ways: a
    second scan on the flipped sequence (same Lambda, B, dt) is read out by its own C[1], flipped back and summed
    with the forward one; summing is S5's bidirectional layer (a concatenation of the two states read by one
    (H, 2P) C). All P states are kept (no conjugate-pair halving), so the output is ``Re`` and not ``2 Re``.

    Initialization is S5's: Lambda the eigenvalues of the normal part of HiPPO-LegS, B (Lecun normal) and C
    (complex normal, variance 1 / P) expressed in its eigenbasis (``V^-1 B``, ``C V``), steps log-uniform in
    [dt_min, dt_max]. Complex parameters are stored as real tensors (``torch.view_as_real``); the SSM runs in
    complex64, or complex128 in a float64 model.

    Args:
        embed_dims (int): token channels C.
        d_state (int): complex states P, shared by all channels. Default: 8 (MambaVision's d_state; S5 uses more).
        d_conv (int): kernel of the two depthwise convolutions. Default: 3.
        expand (float): ``d_inner = int(expand * C)``. Default: 1.
        dt_min, dt_max (float): range of the initial steps. Default: 0.001, 0.1.
        conv_bias, bias (bool): biases of the convolutions / of in_proj and out_proj. Default: False.
        discretization (str): only 'zoh' (accepted so that MambaVision's settings pass through).
    """

    def __init__(self, embed_dims: int, d_state: int = 8, d_conv: int = 3, expand: float = 1, dt_min: float = 0.001,
                 dt_max: float = 0.1, conv_bias: bool = False, bias: bool = False, discretization: str = 'zoh'):
        super().__init__(embed_dims, d_state, d_conv, expand, dt_min, dt_max, conv_bias, bias, discretization)
        half = self.d_inner // 2
        self.log_dt = nn.Parameter(torch.empty(d_state))
        self.Lambda_log = nn.Parameter(torch.empty(d_state))  # Lambda.real = -exp(Lambda_log) < 0: stable
        self.Lambda_imag = nn.Parameter(torch.empty(d_state))
        self.B = nn.Parameter(torch.empty(d_state, half, 2))
        self.C = nn.Parameter(torch.empty(2, half, d_state, 2))  # forward, backward
        self.D = nn.Parameter(torch.empty(half))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """S5's initialization (see the class docstring), D = 1."""
        dt_min, dt_max = self.dt_range
        half = self.d_inner // 2
        self.log_dt.copy_(torch.rand_like(self.log_dt) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        Lambda, V = hippo_legs_normal_eig(self.d_state)
        self.Lambda_log.copy_(torch.log(-Lambda.real))
        self.Lambda_imag.copy_(Lambda.imag)
        B = torch.randn(self.d_state, half, dtype=torch.float64) / math.sqrt(half)
        self.B.copy_(torch.view_as_real(torch.linalg.solve(V, B.to(V.dtype))))
        C = torch.randn(2, half, self.d_state, dtype=torch.complex128) / math.sqrt(self.d_state)
        self.C.copy_(torch.view_as_real(C @ V))
        self.D.fill_(1.0)
        for param in (self.log_dt, self.Lambda_log, self.Lambda_imag, self.D):
            param._no_weight_decay = True

    def ssm_parameters(self, dtype: torch.dtype):
        """(dt (P,), Lambda (P,), B (P, H), C (2, H, P), D (H,)) in the SSM's real ``dtype`` and its complex
        dtype."""
        cdtype = complex_dtype_of(dtype)
        dt = torch.exp(self.log_dt.to(dtype))
        Lambda = torch.complex(-torch.exp(self.Lambda_log.to(dtype)), self.Lambda_imag.to(dtype))
        B = torch.view_as_complex(self.B.to(dtype).contiguous()).to(cdtype)
        C = torch.view_as_complex(self.C.to(dtype).contiguous()).to(cdtype)
        return dt, Lambda, B, C, self.D.to(dtype)

    def ssm(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, H, L) -> (batch, H, L): the bidirectional S5 scan plus ``D * x``."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        u = x.to(dtype).transpose(1, 2)  # (batch, L, H)
        dt, Lambda, B, C, D = self.ssm_parameters(dtype)
        Lambda_bar = torch.exp(Lambda * dt)
        B_bar = (torch.expm1(Lambda * dt) / Lambda).unsqueeze(-1) * B  # (P, H)
        a = Lambda_bar.unsqueeze(0)  # (1, P): time-invariant
        inputs = u.to(B_bar.dtype) @ B_bar.transpose(0, 1)  # (batch, L, P)
        forward = linear_recurrence_scan(a, inputs)
        backward = linear_recurrence_scan(a, inputs.flip(1)).flip(1)
        y = (forward @ C[0].transpose(0, 1)).real + (backward @ C[1].transpose(0, 1)).real + D * u
        return y.transpose(1, 2).to(x.dtype)
