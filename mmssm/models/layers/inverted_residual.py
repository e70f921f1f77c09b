import torch
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from torch import nn

from mmssm.registry import MODELS


@MODELS.register_module()
class CausalInvertedResidual1d(nn.Module):
    """MobileNetV2's inverted residual on a token sequence, with a causal depthwise convolution.

    ``x + project(act(dw(act(expand(x)))))``: a pointwise expansion by ``expand_ratio``, a depthwise convolution
    of ``kernel_size`` in which step t sees steps t-K+1..t (t..t+K-1 with ``reverse=True``), and a pointwise
    projection back, each followed by a norm (the projection without activation). It replaces the short causal
    convolution of a Mamba mixer in the MobileNetV2 variant of "Improving State Space Models for Computer Vision"
    (NYU, 2024); the mixer applies its SiLU after it, as after the plain convolution.

    Args:
        channels (int): input and output channels.
        kernel_size (int): depthwise kernel size. Default: 4 (Mamba's d_conv).
        expand_ratio (float): hidden channels = round(channels * expand_ratio). Default: 2.
        reverse (bool): look towards the end of the sequence (the backward direction of a bidirectional block).
        norm_cfg (dict): norm after each convolution. Default: ``dict(type='BN1d')``.
        act_cfg (dict): activation after the expansion and the depthwise convolution. Default: ReLU6.
    Inputs and outputs are (batch, channels, L).
    """

    def __init__(self, channels: int, kernel_size: int = 4, expand_ratio: float = 2, reverse: bool = False,
                 norm_cfg: dict | None = None, act_cfg: dict | None = None):
        super().__init__()
        norm_cfg = dict(type='BN1d') if norm_cfg is None else norm_cfg
        act_cfg = dict(type='ReLU6') if act_cfg is None else act_cfg
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f'CausalInvertedResidual1d: kernel_size must be a positive int, got {kernel_size!r}.')
        if not isinstance(expand_ratio, (int, float)) or not expand_ratio > 0:
            raise ValueError(f'CausalInvertedResidual1d: expand_ratio must be > 0, got {expand_ratio!r}.')
        hidden = max(1, round(channels * expand_ratio))
        self.kernel_size = kernel_size
        self.reverse = reverse
        self.expand = nn.Conv1d(channels, hidden, 1, bias=False)
        self.expand_norm = build_norm_layer(norm_cfg, hidden)[1]
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, groups=hidden, bias=False)
        self.depthwise_norm = build_norm_layer(norm_cfg, hidden)[1]
        self.project = nn.Conv1d(hidden, channels, 1, bias=False)
        self.project_norm = build_norm_layer(norm_cfg, channels)[1]
        self.act = build_activation_layer(act_cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.expand_norm(self.expand(x)))
        pad = (0, self.kernel_size - 1) if self.reverse else (self.kernel_size - 1, 0)
        out = self.act(self.depthwise_norm(self.depthwise(F.pad(out, pad))))
        return x + self.project_norm(self.project(out))
