import math
from collections.abc import Sequence

import torch
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import nn

from mmssm.registry import MODELS


@MODELS.register_module()
class PlainPyramidNeck(BaseModule):
    """Turn a plain (single-stride) backbone's feature maps into a pyramid, as BEiT / ViTDet do for UperNet and
    FPN-based detectors: each doubling of resolution is a stride-2 transposed convolution (norm and activation
    between two of them), each halving a 2x2 max-pool, and scale 1 is the identity.

    With backbone maps of stride 16 and ``scales=(4, 2, 1, 0.5)`` the outputs have strides 4, 8, 16 and 32.

    Args:
        in_channels (int | Sequence[int]): channels of the backbone maps. An int means every input has that many.
        scales (Sequence[float]): the resolution factor of each output, each a power of two (0.25, 0.5, 1, 2,
            4, ...). Default: (4, 2, 1, 0.5).
        out_channels (int, optional): if given, each output goes through a 1x1 conv + norm to this many channels
            (what an FPN-free detector head expects); if None, each output keeps its input's channels.
        norm_cfg (dict): norm between transposed convolutions and after the optional projection.
            Default: ``dict(type='BN')``; multi-GPU configs use ``SyncBN``.
        act_cfg (dict): activation between transposed convolutions. Default: ``dict(type='GELU')``.
        init_cfg (dict | list[dict], optional): MMEngine initialization config.

    Inputs are a tuple of NCHW maps: either one map, used for every scale, or one map per scale (e.g. from
    ``out_indices`` at several depths of the backbone). The output is a tuple with one map per scale.
    """

    def __init__(self,
                 in_channels,
                 scales: Sequence[float] = (4, 2, 1, 0.5),
                 out_channels: int | None = None,
                 norm_cfg: dict | None = None,
                 act_cfg: dict | None = None,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        act_cfg = dict(type='GELU') if act_cfg is None else act_cfg
        if not isinstance(scales, Sequence) or len(scales) == 0:
            raise ValueError(f'PlainPyramidNeck: scales must be a non-empty sequence, got {scales!r}.')
        for scale in scales:
            if not (isinstance(scale, (int, float)) and scale > 0 and math.log2(scale).is_integer()):
                raise ValueError(
                    f'PlainPyramidNeck: every scale must be a power of two such as 0.5, 1, 2 or 4, got {scale!r} '
                    f'in scales={tuple(scales)}.')
        if isinstance(in_channels, int):
            in_channels = [in_channels] * len(scales)
        in_channels = list(in_channels)
        if len(in_channels) != len(scales) or not all(isinstance(c, int) and c > 0 for c in in_channels):
            raise ValueError(
                f'PlainPyramidNeck: in_channels must be a positive int or one positive int per scale '
                f'({len(scales)} scales), got {in_channels!r}.')
        if out_channels is not None and not (isinstance(out_channels, int) and out_channels > 0):
            raise ValueError(f'PlainPyramidNeck: out_channels must be a positive int or None, got {out_channels!r}.')

        self.scales = tuple(scales)
        self.in_channels = in_channels
        self.out_channels = [out_channels or c for c in in_channels]
        self.resamplers = nn.ModuleList(
            self._make_resampler(c, scale, norm_cfg, act_cfg) for c, scale in zip(in_channels, scales))
        if out_channels is None:
            self.projections = None
        else:
            self.projections = nn.ModuleList(
                ConvModule(c, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None) for c in in_channels)

    @staticmethod
    def _make_resampler(channels: int, scale: float, norm_cfg: dict, act_cfg: dict) -> nn.Module:
        steps = int(math.log2(scale))
        if steps == 0:
            return nn.Identity()
        if steps < 0:
            return nn.Sequential(*[nn.MaxPool2d(kernel_size=2, stride=2) for _ in range(-steps)])
        layers = []
        for step in range(steps):
            if step > 0:
                layers += [build_norm_layer(norm_cfg, channels)[1], build_activation_layer(act_cfg)]
            layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
        return nn.Sequential(*layers)

    def forward(self, inputs) -> tuple:
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        inputs = tuple(inputs)
        if len(inputs) == 1:
            inputs = inputs * len(self.scales)
        if len(inputs) != len(self.scales):
            raise ValueError(
                f'PlainPyramidNeck: got {len(inputs)} feature maps for {len(self.scales)} scales; pass one map or '
                f'one per scale (set the backbone out_indices to match scales={self.scales}).')
        outs = []
        for i, (x, resample) in enumerate(zip(inputs, self.resamplers)):
            if x.dim() != 4 or x.shape[1] != self.in_channels[i]:
                raise ValueError(
                    f'PlainPyramidNeck: input {i} must be an NCHW map with {self.in_channels[i]} channels, '
                    f'got shape {tuple(x.shape)}.')
            x = resample(x)
            if self.projections is not None:
                x = self.projections[i](x)
            outs.append(x)
        return tuple(outs)
