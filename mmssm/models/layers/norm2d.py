import torch
import torch.nn.functional as F
from torch import nn

from mmssm.registry import MODELS


@MODELS.register_module()
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (each pixel normalized on its own), as the ``LayerNorm2d`` of
    timm and of MambaVision's detection / segmentation backbone. Parameters ``weight`` and ``bias`` of shape (C,),
    so ``norm_cfg=dict(type='mmssm.LayerNorm2d', eps=1e-5)`` builds it through MMCV's ``build_norm_layer``."""

    _abbr_ = 'ln2d'

    def __init__(self, num_features: int, eps: float = 1e-5, elementwise_affine: bool = True, **kwargs):
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f'LayerNorm2d: num_features must be a positive int, got {num_features!r}.')
        super().__init__(num_features, eps=eps, elementwise_affine=elementwise_affine, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.normalized_shape[0]:
            raise ValueError(f'LayerNorm2d: expected a (batch, {self.normalized_shape[0]}, H, W) map, got '
                             f'{tuple(x.shape)}.')
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
