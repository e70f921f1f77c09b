"""MambaVision: a hierarchical hybrid of convolution, Mamba and self-attention stages (Hatamizadeh & Kautz, CVPR 2025).

Written from the paper and the facts of the official code (NVlabs/MambaVision, ``mambavision/models/mamba_vision.py``
and the ``MM_mamba_vision`` detection / segmentation backbone); parameter names inside the backbone are the official
ones, so :mod:`mmssm.converters.mambavision` only renames the norms and the head and adds prefixes.

Where mmssm departs from the official code on purpose (no released weight is affected):

* attention dropout applies while training only (the official call passes ``dropout_p`` in eval mode too; every
  released model has it at 0);
* a float64 model keeps A, D and the dt bias in float64 (the official mixer casts them with ``.float()``);
* ``drop_path_rate`` is honoured by the dense backbone (the official ``MM_mamba_vision`` does not pass it on, so its
  detection / segmentation runs trained with the default 0.2 whatever their configs said).
"""
from collections.abc import Sequence

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit, trunc_normal_
from torch import nn

from mmssm.ops.selective_scan import METHODS
from mmssm.registry import MODELS

from ..layers.add_norm import add_norm
from ..layers.attention_pool import AttentionPoolDownsample
from ..layers.mamba_vision_mixer import MambaVisionMixer
from ..layers.norm2d import LayerNorm2d
from ..layers.s4d import S4DMixer
from ..layers.s5 import S5Mixer
from ..layers.self_attention import MultiheadSelfAttention
from ..layers.window import pad_to_windows, window_merge, window_partition
from ..layers.window_attention import (
    ConvRelPosAttention,
    NeighbourhoodAttention,
    ShiftedWindowAttention,
    WindowGeometry,
)

OUT_TYPES = ('featmap', 'avg_featmap')
OUT_NORMS = ('bn', 'ln2d', 'none')
DOWNSAMPLES = ('conv', 'attention_pool')
# the SSM of the Mamba blocks: the official selective scan, or the LTI S4D / S5 layers in the same outer structure
MIXERS = {'s6': MambaVisionMixer, 's4d': S4DMixer, 's5': S5Mixer}
# the attention blocks' token mixing: the official windows, Swin's shifted windows, neighbourhood attention, CoaT's
ATTENTIONS = ('window', 'shifted_window', 'sliding_window', 'conv_relative')
CONV_BLOCKS = ('official', 'convnext')
ARCH_KEYS = ('embed_dims', 'stem_channels', 'depths', 'num_heads', 'window_size', 'mlp_ratio', 'layer_scale',
             'layer_scale_conv', 'drop_path_rate', 'conv_block')
REQUIRED_ARCH_KEYS = ('embed_dims', 'stem_channels', 'depths', 'num_heads', 'window_size')


def _arch(embed_dims, stem_channels, depths, num_heads, window_size, drop_path_rate, layer_scale=None):
    return dict(embed_dims=embed_dims, stem_channels=stem_channels, depths=depths, num_heads=num_heads,
                window_size=window_size, mlp_ratio=4, layer_scale=layer_scale, layer_scale_conv=None,
                drop_path_rate=drop_path_rate)


def num_mamba_blocks(depth: int) -> int:
    """Blocks of a hybrid stage that are Mamba mixers: the first ceil(depth / 2); the rest are self-attention.
    The official rule (attention from depth // 2 + 1 for an odd depth, from depth // 2 for an even one)."""
    return (depth + 1) // 2


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """torch.channels_last for a channels-last (and not also contiguous) map, else torch.contiguous_format."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class PatchEmbed(nn.Module):
    """The stem: two 3x3 stride-2 convolutions (no bias) with BatchNorm (eps 1e-4) and ReLU; stride 4."""

    def __init__(self, in_channels, stem_channels, embed_dims):
        super().__init__()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(stem_channels, eps=1e-4),
            nn.ReLU(),
            nn.Conv2d(stem_channels, embed_dims, 3, 2, 1, bias=False),
            nn.BatchNorm2d(embed_dims, eps=1e-4),
            nn.ReLU(),
        )

    def forward(self, x):
        return self.conv_down(x)


class Downsample(nn.Module):
    """A 3x3 stride-2 convolution (no bias, no norm) that doubles the channels between stages."""

    def __init__(self, dims):
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(dims, 2 * dims, 3, 2, 1, bias=False))

    def forward(self, x):
        return self.reduction(x)


class ConvBlock(nn.Module):
    """Residual conv block of the first two stages: conv3x3 - BN - GELU (tanh approximation) - conv3x3 - BN, with
    an optional layer scale ``gamma``."""

    def __init__(self, dims, drop_path=0., layer_scale=None):
        super().__init__()
        self.conv1 = nn.Conv2d(dims, dims, 3, 1, 1)
        self.norm1 = nn.BatchNorm2d(dims, eps=1e-5)
        self.act1 = nn.GELU(approximate='tanh')
        self.conv2 = nn.Conv2d(dims, dims, 3, 1, 1)
        self.norm2 = nn.BatchNorm2d(dims, eps=1e-5)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dims)) if layer_scale is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.gamma is not None:
            out = out * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(out)


class ConvNeXtBlock(nn.Module):
    """vim_ssm_cv24's ConvNeXt-principles conv block: depthwise 7x7 conv - LayerNorm (over channels, eps 1e-6) -
    inverted bottleneck (1x1 to 4C, GELU, 1x1 back to C; the only activation) - optional layer scale ``gamma``.
    Parameters per block 8C^2 + 57C (+C with layer scale) against the official block's 18C^2 + 6C."""

    def __init__(self, dims, drop_path=0., layer_scale=None, expand=4):
        super().__init__()
        self.dwconv = nn.Conv2d(dims, dims, 7, 1, 3, groups=dims)
        self.norm = nn.LayerNorm(dims, eps=1e-6)
        self.pwconv1 = nn.Linear(dims, expand * dims)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(expand * dims, dims)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dims)) if layer_scale is not None else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        out = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        out = self.pwconv2(self.act(self.pwconv1(out)))
        if self.gamma is not None:
            out = out * self.gamma
        return x + self.drop_path(out.permute(0, 3, 1, 2))


class Mlp(nn.Module):
    """fc1 - GELU (exact) - dropout - fc2 - dropout."""

    def __init__(self, dims, hidden_dims, drop=0.):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class HybridBlock(nn.Module):
    """Pre-norm transformer block over window tokens whose token mixer is either an SSM mixer (``mixer``, a key of
    ``MIXERS``: :class:`MambaVisionMixer` for 's6') or multi-head self-attention (``attention``, one of
    ``ATTENTIONS``; ``shift`` for 'shifted_window', ``window_size`` the neighbourhood of 'sliding_window');
    LayerNorms with eps 1e-5, optional layer scales ``gamma_1`` / ``gamma_2``. ``forward`` takes the stage's
    :class:`WindowGeometry`, which every attention but 'window' needs. With ``fused_add_norm`` the first residual
    add and the second LayerNorm run as one Triton kernel on CUDA (:func:`add_norm`; torch elsewhere)."""

    def __init__(self, dims, use_attention, num_heads, mlp_ratio, mixer_cfg, drop_path=0., layer_scale=None,
                 drop_rate=0., attn_drop_rate=0., mixer='s6', attention='window', shift=False, window_size=None,
                 fused_add_norm=True):
        super().__init__()
        self.use_attention = use_attention
        self.fused_add_norm = fused_add_norm
        self.attention = attention
        self.norm1 = nn.LayerNorm(dims, eps=1e-5)
        attn_args = dict(qkv_bias=True, attn_drop=attn_drop_rate, proj_drop=drop_rate)
        if use_attention and attention == 'shifted_window':
            self.mixer = ShiftedWindowAttention(dims, num_heads, shift=shift, **attn_args)
        elif use_attention and attention == 'sliding_window':
            self.mixer = NeighbourhoodAttention(dims, num_heads, window_size, **attn_args)
        elif use_attention and attention == 'conv_relative':
            self.mixer = ConvRelPosAttention(dims, num_heads, **attn_args)
        elif use_attention:
            self.mixer = MultiheadSelfAttention(dims, num_heads, **attn_args)
        else:
            self.mixer = MIXERS[mixer](dims, **mixer_cfg)
        self.norm2 = nn.LayerNorm(dims, eps=1e-5)
        self.mlp = Mlp(dims, int(dims * mlp_ratio), drop_rate)
        if layer_scale is not None:
            self.gamma_1 = nn.Parameter(layer_scale * torch.ones(dims))
            self.gamma_2 = nn.Parameter(layer_scale * torch.ones(dims))
        else:
            self.gamma_1 = self.gamma_2 = None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x, geometry=None):
        if self.use_attention and self.attention != 'window':
            out = self.mixer(self.norm1(x), geometry)
        else:
            out = self.mixer(self.norm1(x))
        out = self.drop_path(out if self.gamma_1 is None else self.gamma_1 * out)
        normed, x = add_norm(out, x, self.norm2, False, self.fused_add_norm)  # x + out, norm2 of it
        out = self.mlp(normed)
        return x + self.drop_path(out if self.gamma_2 is None else self.gamma_2 * out)


class MambaVisionStage(nn.Module):
    """One stage ("level"): conv blocks, or hybrid blocks run on windows, then an optional downsampling.

    A hybrid stage pads its map once at the bottom/right to whole windows, runs every block on the windows'
    tokens (padding included, as the official model), merges the windows and crops the padding. With
    ``num_registers`` R > 0 it prepends R learned tokens (``registers``) to every window's tokens, runs them through
    all blocks and drops them before merging. ``forward`` returns (the downsampled map for the next stage, the
    stage's own map before downsampling)."""

    def __init__(self, dims, depth, conv, num_heads, window_size, mlp_ratio, mixer_cfg, drop_paths, layer_scale,
                 layer_scale_conv, downsample, drop_rate=0., attn_drop_rate=0., with_cp=False,
                 downsample_type='conv', mixer='s6', attention='window', num_registers=0, conv_block='official',
                 fused_add_norm=True):
        super().__init__()
        self.conv = conv
        self.window_size = window_size
        self.with_cp = with_cp
        self.num_registers = 0 if conv else num_registers
        if conv:
            block = ConvNeXtBlock if conv_block == 'convnext' else ConvBlock
            self.blocks = nn.ModuleList([block(dims, drop_paths[i], layer_scale_conv) for i in range(depth)])
        else:
            mamba = num_mamba_blocks(depth)
            # shifted windows alternate: the 2nd, 4th, ... attention block of the stage shifts
            self.blocks = nn.ModuleList([
                HybridBlock(dims, i >= mamba, num_heads, mlp_ratio, mixer_cfg, drop_paths[i], layer_scale,
                            drop_rate, attn_drop_rate, mixer, attention, shift=i >= mamba and (i - mamba) % 2 == 1,
                            window_size=window_size, fused_add_norm=fused_add_norm) for i in range(depth)
            ])
            if self.num_registers:
                self.registers = nn.Parameter(trunc_normal_(torch.empty(self.num_registers, dims), std=.02))
        if not downsample:
            self.downsample = None
        elif downsample_type == 'attention_pool':
            self.downsample = AttentionPoolDownsample(dims, 2 * dims)
        else:
            self.downsample = Downsample(dims)

    def _run_blocks(self, x, *geometry):
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, *geometry, use_reentrant=False)
            else:
                x = block(x, *geometry)
        return x

    def forward(self, x):
        if self.conv:
            x = self._run_blocks(x)
        else:
            height, width = x.shape[-2:]
            layout = memory_format(x)
            padded = pad_to_windows(x, self.window_size)
            tokens = window_partition(padded, self.window_size)
            reg = self.num_registers
            if reg:
                tokens = torch.cat([self.registers.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
            tokens = self._run_blocks(tokens, WindowGeometry(height, width, self.window_size, reg))[:, reg:]
            x = window_merge(tokens, self.window_size, *padded.shape[-2:])[:, :, :height, :width]
            x = x.contiguous(memory_format=layout)  # the stage's input layout
        return (x if self.downsample is None else self.downsample(x)), x


@MODELS.register_module()
class MambaVision(BaseModule):
    """MambaVision backbone for classification and dense prediction.

    A stride-4 conv stem, two stages of residual conv blocks and two hybrid stages whose blocks run on windows of
    the feature map: the first ceil(depth / 2) blocks of a hybrid stage mix tokens with :class:`MambaVisionMixer`
    (a selective scan over half the channels, discretized with ``discretization``), the rest with self-attention.
    A 3x3 stride-2 convolution doubles the channels after each of the first three stages (strides 4, 8, 16, 32;
    channels C, 2C, 4C, 8C).

    Outputs are the maps of the stages in ``out_indices`` (before their downsampling), each through its own norm
    ``norm{i}``: the official classifier puts a BatchNorm on the last stage's map and then average-pools it
    (``out_indices=(3,)``, ``out_norm='bn'``, the defaults; with MMPretrain's ``GlobalAveragePooling`` neck and a
    ``LinearClsHead``, or ``out_type='avg_featmap'`` and no neck); the official detection / segmentation backbone
    puts a LayerNorm over channels on every output (``out_indices=(0, 1, 2, 3)``, ``out_norm='ln2d'``).

    Any input size works: the stem and the downsamplings round up (ceil(H / 2) each), and each hybrid stage pads
    its map to whole windows and crops the padding afterwards.

    The maps keep the input's memory format: a channels-last input (``x.to(memory_format=torch.channels_last)``,
    with the model converted the same way) runs every convolution and BatchNorm in cuDNN's native layout on a GPU,
    without NCHW <-> NHWC conversions, and a window is then a view of the map. Dense outputs are contiguous NCHW.

    Args:
        arch (str | dict): a name of :attr:`arch_zoo` (the paper's 'tiny', 'tiny2', 'small', 'base', 'large',
            'large2', the ImageNet-21K 'large2-512', 'large3-256', 'large3-512', each also under the official model
            name such as 'mamba_vision_T' or 'mamba_vision_L3_512_21k', 'test', a tiny model for unit tests,
            and 'tiny-convnext', 'small-convnext', 'base-convnext' and 'test-convnext' with ConvNeXt conv stages),
            or a dict with ``embed_dims``, ``stem_channels``, ``depths`` (4), ``num_heads`` (4), ``window_size``
            (4; the first two belong to the conv stages and are not used, kept as in the official configs) and
            optionally ``mlp_ratio`` (4), ``layer_scale`` and ``layer_scale_conv`` (None: no layer scale; a float:
            its initial value), ``drop_path_rate`` (0), ``conv_block`` ('official').
        in_channels (int): image channels. Default: 3.
        window_size (Sequence[int], optional): override the arch's 4 window sizes (the official detection configs
            use (8, 8, 112, 56), the segmentation ones (8, 8, 64, 32)).
        out_indices (int | Sequence[int]): stages (0-3, or -1 for the last) whose maps are returned. Default: 3.
        out_norm (str | dict | None): norm of each output: 'bn' (BatchNorm2d, the classifier's final norm), 'ln2d'
            (:class:`~mmssm.models.layers.LayerNorm2d`, eps 1e-5, the detection / segmentation backbone's),
            'none', or an MMCV norm config. Default: 'bn'.
        out_type (str): 'featmap' (NCHW maps) or 'avg_featmap' ((B, C), averaged over the map after its norm).
        frozen_stages (int): -1 freezes nothing; 0 the stem; k > 0 also stages 0..k-1 (with their downsampling)
            and their output norms.
        norm_eval (bool): keep every BatchNorm in eval mode while training (for small-batch dense fine-tuning).
        drop_rate (float): dropout in the MLPs and after the attention projection. Default: 0.
        attn_drop_rate (float): dropout on the attention weights (training only). Default: 0.
        drop_path_rate (float, optional): stochastic depth, rising linearly over all blocks of all stages. Default:
            the arch's official training value (0.2 for T/T2/S, 0.3 for B/L/L2, 0.5 for L3).
        discretization (str): the selective scan's method in every Mamba block: 'zoh' (Mamba's, loads the official
            weights unchanged), 'foh', 'bilinear', 'poly', 'highorder' or 'rk4'. Default: 'zoh'. The 's4d' and
            's5' mixers take 'zoh' only.
        mixer (str): the SSM of the Mamba blocks: 's6' (the official selective scan,
            :class:`~mmssm.models.layers.MambaVisionMixer`), 's4d' (:class:`~mmssm.models.layers.S4DMixer`) or 's5'
            (:class:`~mmssm.models.layers.S5Mixer`), all in the same outer structure (in_proj, two convolutions,
            out_proj). Default: 's6'; official checkpoints load into 's6' only.
        mixer_cfg (dict, optional): further arguments of the mixer class (``d_state`` 8, ``d_conv`` 3, ``expand``
            1, and for 's6' ``dt_rank``, ``scan_backend``, ...).
        with_cp (bool): activation checkpointing of each block (saves memory, costs a second forward).
        fused_add_norm (bool): each hybrid block's first residual add and second LayerNorm in one Triton kernel
            (mmssm.ops.fused_add_norm) when the input is on CUDA (torch otherwise; same function up to rounding:
            the kernel normalizes the float32 sum). Default: True.
        downsample (str): between stages, 'conv' (the official 3x3 stride-2 convolution) or 'attention_pool'
            (vim_ssm_cv24's attention pooling over each 3x3 neighbourhood, :class:`AttentionPoolDownsample`; same
            output sizes, new weights). Default: 'conv'.
        attention (str): the token mixing of the hybrid stages' attention blocks: 'window' (the official attention
            within each window, padding included), 'shifted_window' (Swin: every second attention block of a
            stage rolls the windows by window_size // 2 with the mask that keeps apart tokens the roll brings
            together, :class:`~mmssm.models.layers.ShiftedWindowAttention`), 'sliding_window' (neighbourhood
            attention over the window_size x window_size neighbourhood of each token, clamped at the borders as
            NATTEN, :class:`~mmssm.models.layers.NeighbourhoodAttention`) or 'conv_relative' (CoaT's factorized
            attention with a depthwise 3x3 convolutional relative position encoding, within windows,
            :class:`~mmssm.models.layers.ConvRelPosAttention`). All but 'window' keep padding out of the real
            tokens' attention outputs (the Mamba blocks still scan the padded windows, as the official model).
            Default: 'window'; all but 'conv_relative' (which adds ``crpe``) load official checkpoints.
        num_registers (int): R learned register tokens (Darcet et al., 2024) per hybrid stage (``registers``,
            (R, C)), prepended to every window's tokens, carried through all blocks of the stage (Mamba blocks
            too) and dropped before the windows are merged. Default: 0 (none; no parameter is added).
        conv_block (str, optional): the blocks of the two conv stages: 'official' (conv3x3 - BN - GELU -
            conv3x3 - BN, 18C^2 + 6C parameters per block) or 'convnext' (vim_ssm_cv24's ConvNeXt principles:
            depthwise 7x7 - LayerNorm - 1x1 to 4C - GELU - 1x1, :class:`ConvNeXtBlock`, 8C^2 + 57C per block; for
            'tiny' this removes 803,440 of 31.8M parameters). Default: None, the arch's (``conv_block`` of the arch,
            'official' unless it says otherwise, as the '*-convnext' archs do).
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint=...)`` with a checkpoint converted by
            ``tools/model_converters/mambavision2mmssm.py``. Without it the official initialization is used
            (truncated normal 0.02 for every linear layer, zero biases, unit norms); so it is with
            ``checkpoint=None``, which the task configs set, so that a child config or ``--cfg-options
            model.backbone.init_cfg.checkpoint=PATH`` only has to give the path.
        pruned_widths (dict, optional): per-block widths of a structurally pruned model, ``{'<stage>.<block>':
            {'d_inner': int, 'num_heads': int, 'mlp_hidden': int}}`` (the keys that block has; conv blocks:
            ``{'conv_hidden': int}``, the channels between conv1 and conv2), written by
            ``tools/analysis/prune_export.py`` (see :mod:`mmssm.pruning.export`). Default: None (full widths).
    """

    _T = _arch(80, 32, (1, 3, 8, 4), (2, 4, 8, 16), (8, 8, 14, 7), 0.2)
    _T2 = _arch(80, 32, (1, 3, 11, 4), (2, 4, 8, 16), (8, 8, 14, 7), 0.2)
    _S = _arch(96, 64, (3, 3, 7, 5), (2, 4, 8, 16), (8, 8, 14, 7), 0.2)
    _B = _arch(128, 64, (3, 3, 10, 5), (2, 4, 8, 16), (8, 8, 14, 7), 0.3, layer_scale=1e-5)
    _L = _arch(196, 64, (3, 3, 10, 5), (4, 8, 16, 32), (8, 8, 14, 7), 0.3, layer_scale=1e-5)
    _L2 = _arch(196, 64, (3, 3, 12, 5), (4, 8, 16, 32), (8, 8, 14, 7), 0.3, layer_scale=1e-5)
    _L2_512 = _arch(196, 64, (3, 3, 12, 5), (4, 8, 16, 32), (8, 8, 32, 16), 0.3, layer_scale=1e-5)
    _L3_256 = _arch(256, 64, (3, 3, 20, 10), (4, 8, 16, 32), (8, 8, 16, 8), 0.5, layer_scale=1e-5)
    _L3_512 = _arch(256, 64, (3, 3, 20, 10), (4, 8, 16, 32), (8, 8, 32, 16), 0.5, layer_scale=1e-5)
    arch_zoo = {
        **dict.fromkeys(['tiny', 't', 'mamba_vision_t'], _T),
        **dict.fromkeys(['tiny2', 't2', 'mamba_vision_t2'], _T2),
        **dict.fromkeys(['small', 's', 'mamba_vision_s'], _S),
        **dict.fromkeys(['base', 'b', 'mamba_vision_b', 'mamba_vision_b_21k'], _B),
        **dict.fromkeys(['large', 'l', 'mamba_vision_l', 'mamba_vision_l_21k'], _L),
        **dict.fromkeys(['large2', 'l2', 'mamba_vision_l2'], _L2),
        **dict.fromkeys(['large2-512', 'l2-512', 'mamba_vision_l2_512_21k'], _L2_512),
        **dict.fromkeys(['large3-256', 'l3-256', 'mamba_vision_l3_256_21k'], _L3_256),
        **dict.fromkeys(['large3-512', 'l3-512', 'mamba_vision_l3_512_21k'], _L3_512),
        'test': dict(embed_dims=8, stem_channels=8, depths=(1, 1, 3, 2), num_heads=(1, 1, 2, 4),
                     window_size=(8, 8, 3, 2), mlp_ratio=2, layer_scale=None, layer_scale_conv=None,
                     drop_path_rate=0.),
        # vim_ssm_cv24's ConvNeXt-principles conv stages (``conv_block='convnext'``) on the official hybrid stages
        'tiny-convnext': dict(_T, conv_block='convnext'),
        'small-convnext': dict(_S, conv_block='convnext'),
        'base-convnext': dict(_B, conv_block='convnext'),
    }
    arch_zoo['test-convnext'] = dict(arch_zoo['test'], conv_block='convnext')
    del _T, _T2, _S, _B, _L, _L2, _L2_512, _L3_256, _L3_512
    num_stages = 4

    def __init__(self, arch='tiny', in_channels=3, window_size=None, out_indices=3, out_norm='bn',
                 out_type='featmap', frozen_stages=-1, norm_eval=False, drop_rate=0., attn_drop_rate=0.,
                 drop_path_rate=None, discretization='zoh', mixer_cfg=None, with_cp=False, downsample='conv',
                 init_cfg=None, mixer='s6', attention='window', num_registers=0, conv_block=None,
                 pruned_widths=None, fused_add_norm=True):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        if window_size is not None:
            self.arch_settings['window_size'] = self._check_window_size(window_size)
        settings = self.arch_settings
        self.embed_dims = settings['embed_dims']
        self.depths = tuple(settings['depths'])
        self.num_features = [self.embed_dims * 2 ** i for i in range(self.num_stages)]
        if not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f'MambaVision: in_channels must be a positive int, got {in_channels!r}.')
        if discretization not in METHODS:
            raise ValueError(f'MambaVision: unknown discretization {discretization!r}; choose one of {METHODS}.')
        if mixer not in MIXERS:
            raise ValueError(f'MambaVision: unknown mixer {mixer!r}; choose one of {tuple(MIXERS)}.')
        if mixer != 's6' and discretization != 'zoh':
            raise ValueError(f"MambaVision: mixer {mixer!r} takes discretization 'zoh' only, got "
                             f"{discretization!r}; use mixer='s6' for the other methods.")
        if out_type not in OUT_TYPES:
            raise ValueError(f'MambaVision: out_type must be one of {OUT_TYPES}, got {out_type!r}.')
        if downsample not in DOWNSAMPLES:
            raise ValueError(f'MambaVision: downsample must be one of {DOWNSAMPLES}, got {downsample!r}.')
        if attention not in ATTENTIONS:
            raise ValueError(f'MambaVision: unknown attention {attention!r}; choose one of {ATTENTIONS}.')
        if not isinstance(num_registers, int) or isinstance(num_registers, bool) or num_registers < 0:
            raise ValueError(f'MambaVision: num_registers must be an int >= 0 (register tokens per window of each '
                             f'hybrid stage; 0 for none), got {num_registers!r}.')
        if conv_block is None:
            conv_block = settings.get('conv_block', 'official')
        if conv_block not in CONV_BLOCKS:
            raise ValueError(f'MambaVision: unknown conv_block {conv_block!r}; choose one of {CONV_BLOCKS} (or None '
                             f'for the arch\'s).')
        settings['conv_block'] = conv_block
        if drop_path_rate is None:
            drop_path_rate = settings.get('drop_path_rate', 0.)
        for name, value in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                            ('drop_path_rate', drop_path_rate)):
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f'MambaVision: {name} must be in [0, 1), got {value!r}.')
        self.out_indices = self._check_out_indices(out_indices)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'MambaVision: frozen_stages must be an int in [-1, {self.num_stages}], '
                             f'got {frozen_stages!r}.')
        mixer_cfg = dict(mixer_cfg or {})
        if mixer_cfg.get('discretization', discretization) != discretization:
            raise ValueError(f"MambaVision: discretization is set both as a MambaVision argument ({discretization!r}) "
                             f"and in mixer_cfg ({mixer_cfg['discretization']!r}); set it once, as the argument.")
        mixer_cfg['discretization'] = discretization
        mixer_cfg.setdefault('d_state', 8)
        mixer_cfg.setdefault('d_conv', 3)
        mixer_cfg.setdefault('expand', 1)

        self.in_channels = in_channels
        self.out_type = out_type
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.discretization = discretization
        self.mixer = mixer
        self.drop_path_rate = drop_path_rate
        self.attention = attention
        self.num_registers = num_registers
        self.conv_block = conv_block

        self.patch_embed = PatchEmbed(in_channels, settings['stem_channels'], self.embed_dims)
        num_blocks = sum(self.depths)
        # linspace(0, drop_path_rate, num_blocks) in Python, so that the model also builds on the meta device
        rates = [drop_path_rate * i / (num_blocks - 1) if num_blocks > 1 else 0. for i in range(num_blocks)]
        self.levels = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            start = sum(self.depths[:i])
            self.levels.append(MambaVisionStage(
                self.num_features[i], depth, conv=i < 2, num_heads=settings['num_heads'][i],
                window_size=settings['window_size'][i], mlp_ratio=settings.get('mlp_ratio', 4),
                mixer_cfg=mixer_cfg, drop_paths=rates[start:start + depth],
                layer_scale=settings.get('layer_scale'), layer_scale_conv=settings.get('layer_scale_conv'),
                downsample=i < self.num_stages - 1, drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                with_cp=with_cp, downsample_type=downsample, mixer=mixer, attention=attention,
                num_registers=num_registers, conv_block=conv_block, fused_add_norm=fused_add_norm))
        for i in self.out_indices:
            self.add_module(f'norm{i}', self._build_out_norm(out_norm, self.num_features[i]))
        self._register_load_state_dict_pre_hook(self._skip_batch_norm_into_other_norm)
        self.apply(self._official_init)
        if pruned_widths:  # a structurally pruned model (tools/analysis/prune_export.py)
            from mmssm.pruning.export import apply_pruned_widths
            apply_pruned_widths(self, pruned_widths)
        self._freeze_stages()

    # ------------------------------------------------------------------ argument checks
    def _parse_arch(self, arch):
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(f'MambaVision: unknown arch {arch!r}; choose one of {sorted(self.arch_zoo)} or '
                                 f'give a dict with {list(REQUIRED_ARCH_KEYS)}.')
            return {key: (list(value) if isinstance(value, tuple) else value)
                    for key, value in self.arch_zoo[arch.lower()].items()}
        if not isinstance(arch, dict):
            raise ValueError(f'MambaVision: arch must be a name or a dict, got {type(arch).__name__}.')
        missing = set(REQUIRED_ARCH_KEYS) - set(arch)
        unknown = set(arch) - set(ARCH_KEYS)
        if missing or unknown:
            raise ValueError(f'MambaVision: an arch dict needs {list(REQUIRED_ARCH_KEYS)} (optional mlp_ratio, '
                             f'layer_scale, layer_scale_conv, drop_path_rate, conv_block); missing {sorted(missing)}, '
                             f'unknown {sorted(unknown)} in {arch!r}.')
        arch = dict(arch)
        for key in ('embed_dims', 'stem_channels'):
            if not isinstance(arch[key], int) or arch[key] <= 0:
                raise ValueError(f'MambaVision: arch {key} must be a positive int, got {arch[key]!r}.')
        for key in ('depths', 'num_heads'):
            value = arch[key]
            if not (isinstance(value, Sequence) and len(value) == self.num_stages
                    and all(isinstance(v, int) and v > 0 for v in value)):
                raise ValueError(f'MambaVision: arch {key} must be {self.num_stages} positive ints, got {value!r}.')
            arch[key] = list(value)
        arch['window_size'] = self._check_window_size(arch['window_size'])
        for i in (2, 3):
            dims = arch['embed_dims'] * 2 ** i
            if dims % arch['num_heads'][i]:
                raise ValueError(f'MambaVision: num_heads[{i}]={arch["num_heads"][i]} must divide the stage\'s '
                                 f'{dims} channels (embed_dims * {2 ** i}).')
        for key in ('layer_scale', 'layer_scale_conv'):
            value = arch.get(key)
            if value is not None and not isinstance(value, (int, float)):
                raise ValueError(f'MambaVision: arch {key} must be None or a number (its initial value), '
                                 f'got {value!r}.')
        return arch

    def _check_window_size(self, window_size):
        if not (isinstance(window_size, Sequence) and not isinstance(window_size, str)
                and len(window_size) == self.num_stages
                and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in window_size)):
            raise ValueError(f'MambaVision: window_size must be {self.num_stages} positive ints, one per stage (the '
                             f'first two, of the conv stages, are not used), e.g. (8, 8, 14, 7); got '
                             f'{window_size!r}.')
        return list(window_size)

    def _check_out_indices(self, out_indices):
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or isinstance(out_indices, str) or len(out_indices) == 0:
            raise ValueError(f'MambaVision: out_indices must be an int or a non-empty sequence of ints in '
                             f'[-{self.num_stages}, {self.num_stages - 1}], got {out_indices!r}.')
        checked = []
        for index in out_indices:
            if not isinstance(index, int) or isinstance(index, bool) or \
                    not -self.num_stages <= index < self.num_stages:
                raise ValueError(f'MambaVision: out_indices entries must be stage numbers in [-{self.num_stages}, '
                                 f'{self.num_stages - 1}], got {index!r} in {tuple(out_indices)}.')
            index %= self.num_stages
            if index in checked:
                raise ValueError(f'MambaVision: out_indices has stage {index} twice: {tuple(out_indices)}.')
            checked.append(index)
        return checked

    @staticmethod
    def _build_out_norm(out_norm, channels):
        if out_norm is None or out_norm == 'none':
            return nn.Identity()
        if out_norm == 'bn':
            return nn.BatchNorm2d(channels, eps=1e-5)
        if out_norm == 'ln2d':
            return LayerNorm2d(channels, eps=1e-5)
        if isinstance(out_norm, dict):
            return build_norm_layer(out_norm, channels)[1]
        raise ValueError(f'MambaVision: out_norm must be one of {OUT_NORMS}, None or an MMCV norm config dict, '
                         f'got {out_norm!r}.')

    # ------------------------------------------------------------------ init / loading
    @staticmethod
    def _official_init(module):
        # every linear layer, the Mamba mixers' dt_proj included, so its bias starts at zero as in the official code
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def init_weights(self):
        """The official initialization is done at construction; ``init_weights`` loads a Pretrained checkpoint, or,
        for ``dict(type='Pretrained', checkpoint=None)``, says that none is loaded and keeps the initialization."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = [cfg for cfg in cfgs
                      if isinstance(cfg, dict) and cfg.get('type') in ('Pretrained', PretrainedInit)]
        if not pretrained or pretrained[0].get('checkpoint') is not None:
            super().init_weights()
            return
        print_log('MambaVision: init_cfg Pretrained has checkpoint=None: the backbone starts from its initialization '
                  '(set model.backbone.init_cfg.checkpoint to a checkpoint converted by '
                  'tools/model_converters/mambavision2mmssm.py --backbone-only to start from one).', logger='current')
        given = self.init_cfg
        self.init_cfg = [cfg for cfg in cfgs if cfg is not pretrained[0]] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = given

    def _skip_batch_norm_into_other_norm(self, state_dict, prefix, *args, **kwargs):
        """A classification checkpoint's final BatchNorm (``norm3``, with running statistics) is not loaded into
        a LayerNorm2d output norm of a dense backbone: the official dense backbone starts its norms fresh too."""
        for i in self.out_indices:
            norm = getattr(self, f'norm{i}')
            key = f'{prefix}norm{i}.'
            if isinstance(norm, nn.modules.batchnorm._BatchNorm) or key + 'running_mean' not in state_dict:
                continue
            skipped = [k for k in list(state_dict) if k.startswith(key)]
            for k in skipped:
                del state_dict[k]
            print_log(f'MambaVision: not loading {key}* (a BatchNorm in the checkpoint) into this backbone\'s '
                      f'{type(norm).__name__}; it keeps its initial values.', logger='current')

    # ------------------------------------------------------------------ training mode / freezing
    def _freeze(self, module):
        module.eval()
        for param in module.parameters():
            param.requires_grad = False

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            self._freeze(self.patch_embed)
        for i in range(self.frozen_stages):
            self._freeze(self.levels[i])
            if i in self.out_indices:
                self._freeze(getattr(self, f'norm{i}'))

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer id for layer-wise learning-rate decay: 0 for the stem, then one id per block in order over all
        stages (a downsampling with its stage's last block), and the last id for the output norms and anything
        outside the backbone. Returns (layer id, number of ids)."""
        num_layers = sum(self.depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.startswith('patch_embed.'):
            return 0, num_layers
        if name.startswith('levels.'):
            parts = name.split('.')
            stage = int(parts[1])
            if parts[2] == 'blocks':
                block = int(parts[3])
            else:  # the registers enter with the stage's first block, a downsampling leaves with its last
                block = 0 if parts[2] == 'registers' else self.depths[stage] - 1
            return sum(self.depths[:stage]) + block + 1, num_layers
        return num_layers - 1, num_layers

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor):
        if x.dim() != 4:
            raise ValueError(f'MambaVision: expected a (batch, channels, height, width) image tensor, got shape '
                             f'{tuple(x.shape)}.')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'MambaVision: the input has {x.shape[1]} channels but the model was built with '
                             f'in_channels={self.in_channels} (input shape {tuple(x.shape)}); convert the images or '
                             f'set in_channels.')
        x = self.patch_embed(x)
        outs = {}
        for i, level in enumerate(self.levels[:max(self.out_indices) + 1]):  # later stages would go unused
            x, stage_map = level(x)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(stage_map)
                outs[i] = out.mean(dim=(2, 3)) if self.out_type == 'avg_featmap' else out.contiguous()
        return tuple(outs[i] for i in self.out_indices)
