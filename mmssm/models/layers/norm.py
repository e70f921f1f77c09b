import torch
from torch import nn

from mmssm.registry import MODELS

from .precision import at_least_fp32


@MODELS.register_module()
class RMSNorm(nn.Module):
    """Root-mean-square layer norm over the last dimension, as in Mamba, Vim and MambaVision.

    Unlike ``torch.nn.RMSNorm``, the statistics are taken in at least float32 and the result is cast back to the
    input dtype: in bf16/fp16 the mean of squares over hundreds of channels loses too much precision, and the
    original Mamba blocks (whose weights mmssm loads) normalize in float32.

    Args:
        num_features (int): size of the last dimension. Named as MMCV's ``build_norm_layer`` passes it, so
            ``norm_cfg=dict(type='mmssm.RMSNorm')`` works wherever a config takes a norm layer over channels-last
            tokens.
        eps (float): added to the mean of squares. Default: 1e-5 (Mamba's).
        elementwise_affine (bool): learn a per-channel scale. Default: True.
    """

    _abbr_ = 'rms'

    def __init__(self, num_features: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f'RMSNorm: num_features must be a positive int, got {num_features!r}.')
        if not eps > 0:
            raise ValueError(f'RMSNorm: eps must be > 0, got {eps!r}.')
        self.num_features = num_features
        self.eps = eps
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(num_features))
        else:
            self.register_parameter('weight', None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.num_features:
            raise ValueError(
                f'RMSNorm: expected the last dimension to be num_features={self.num_features}, '
                f'got input of shape {tuple(x.shape)}.')
        x_float = at_least_fp32(x)
        out = x_float * torch.rsqrt(x_float.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            out = out * self.weight.to(x_float.dtype)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}, elementwise_affine={self.weight is not None}'
