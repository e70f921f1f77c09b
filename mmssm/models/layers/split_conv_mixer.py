"""The outer structure of MambaVision's mixer, shared by its selective-scan (S6), S4D and S5 forms."""
import torch
import torch.nn.functional as F
from torch import nn


def complex_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype an SSM of real ``dtype`` computes in: complex64 up to float32, complex128 for float64."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class SplitConvMixer(nn.Module):
    """MambaVision's mixer with its SSM left to a subclass: ``in_proj`` maps C tokens to ``d_inner = int(expand *
    C)`` channels, split into x and z halves; each gets a symmetric ('same') depthwise convolution and SiLU; x goes
    through :meth:`ssm` ((batch, d_inner / 2, L) -> same shape), z is concatenated to its output without SSM, and
    ``out_proj`` maps back to C. The names (``in_proj``, ``conv1d_x``, ``conv1d_z``, ``out_proj``) are those of
    :class:`MambaVisionMixer`.

    Subclasses call ``super().__init__`` first, then build their SSM parameters over ``self.d_inner // 2`` channels;
    one that supports other discretizations than 'zoh' overrides ``_check_discretization``.
    """

    def __init__(self, embed_dims: int, d_state: int, d_conv: int = 3, expand: float = 1, dt_min: float = 0.001,
                 dt_max: float = 0.1, conv_bias: bool = False, bias: bool = False, discretization: str = 'zoh'):
        super().__init__()
        name = type(self).__name__
        if not isinstance(embed_dims, int) or embed_dims <= 0:
            raise ValueError(f'{name}: embed_dims must be a positive int, got {embed_dims!r}.')
        if not isinstance(d_state, int) or d_state <= 0:
            raise ValueError(f'{name}: d_state must be a positive int, got {d_state!r}.')
        if not isinstance(d_conv, int) or d_conv <= 0:
            raise ValueError(f'{name}: d_conv must be a positive int, got {d_conv!r}.')
        self._check_discretization(discretization)
        d_inner = int(expand * embed_dims)
        if d_inner < 2 or d_inner % 2:
            raise ValueError(f'{name}: int(expand * embed_dims) = {d_inner} must be an even number >= 2 (it is '
                             f'split into the SSM half and the non-SSM half); got expand={expand!r}, '
                             f'embed_dims={embed_dims}.')
        if not 0 < dt_min <= dt_max:
            raise ValueError(f'{name}: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}.')
        self.embed_dims = embed_dims
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = d_inner
        self.discretization = discretization
        self.dt_range = (dt_min, dt_max)
        half = d_inner // 2
        self.in_proj = nn.Linear(embed_dims, d_inner, bias=bias)
        self.out_proj = nn.Linear(d_inner, embed_dims, bias=bias)
        self.conv1d_x = nn.Conv1d(half, half, d_conv, groups=half, bias=conv_bias)
        self.conv1d_z = nn.Conv1d(half, half, d_conv, groups=half, bias=conv_bias)

    def _check_discretization(self, discretization):
        if discretization != 'zoh':
            # the closed forms of the kernel (S4D) and of the scan coefficients (S5) are the ZOH ones
            raise ValueError(f"{type(self).__name__}: only discretization 'zoh' is implemented, got "
                             f"{discretization!r}; use mixer='s6' for the other methods.")

    def _conv(self, x, conv):
        # symmetric ('same') padding: a window of image tokens has no causal direction
        return F.silu(F.conv1d(x, conv.weight, conv.bias, padding='same', groups=conv.groups))

    def branches(self, hidden_states: torch.Tensor):
        """(batch, L, C) -> the x and z halves after convolution and SiLU, each (batch, d_inner / 2, L)."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.embed_dims:
            raise ValueError(f'{type(self).__name__}: expected input of shape (batch, L, {self.embed_dims}), got '
                             f'{tuple(hidden_states.shape)}.')
        x, z = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)
        return self._conv(x, self.conv1d_x), self._conv(z, self.conv1d_z)

    def ssm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, L, C) -> (batch, L, C)."""
        x, z = self.branches(hidden_states)
        y = torch.cat([self.ssm(x), z], dim=1)
        return self.out_proj(y.transpose(1, 2))

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, d_inner={self.d_inner}, d_state={self.d_state}, '
                f'd_conv={self.d_conv}')
