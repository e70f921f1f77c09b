"""Vision Mamba (Vim): a plain stack of bidirectional Mamba blocks over image patches (Zhu et al., 2024)."""
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit, trunc_normal_
from torch import nn

from mmssm.ops.selective_scan import METHODS
from mmssm.registry import MODELS

from ..layers import MambaMixer, VisionRoPE2d, add_norm, resize_pos_embed

CLS_POSITIONS = ('middle', 'head', 'none')
OUT_TYPES = ('cls_token', 'mean', 'max', 'featmap', 'raw')
FEATURE_SOURCES = ('stream', 'mixer')
# the std of a standard normal truncated to [-2, 2]: dividing by it gives a truncated normal of the wanted std
TRUNC_NORMAL_2STD = .87962566103423978


def _to_2tuple(value, name):
    if isinstance(value, int):
        value = (value, value)
    if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ValueError(f'Vim: {name} must be a positive int or a pair of positive ints, got {value!r}.')
    return tuple(value)


class PatchEmbed(nn.Module):
    """Conv patch embedding that pads the bottom/right of an image just enough for the kernel to cover it.

    For a size that the kernel and stride already fit (224 with 16/16 or 16/8), nothing is padded, so the grid
    is ``(H - kernel) // stride + 1`` as in the original Vim; otherwise it is ``ceil((H - kernel) / stride) + 1``.
    """

    def __init__(self, in_channels, embed_dims, kernel_size, stride):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size=kernel_size, stride=stride)

    def grid(self, size):
        return tuple(max(math.ceil((s - k) / st), 0) + 1 for s, k, st in zip(size, self.kernel_size, self.stride))

    def forward(self, x):
        grid = self.grid(x.shape[-2:])
        pad = [(g - 1) * st + k - s for g, s, k, st in zip(grid, x.shape[-2:], self.kernel_size, self.stride)]
        if any(pad):
            x = F.pad(x, (0, pad[1], 0, pad[0]))
        if self._patchify():
            return self._patch_matmul(x, grid), grid
        x = self.projection(x)
        return x.flatten(2).transpose(1, 2), grid

    def _patchify(self) -> bool:
        """Whether the patches do not overlap (kernel = stride) and the projection is a plain Conv2d without hooks
        (FLOP counters and pruning hooks see it called as a module otherwise)."""
        projection = self.projection
        return self.kernel_size == self.stride and type(projection) is nn.Conv2d \
            and type(projection.weight) is nn.Parameter and projection.padding == (0, 0) \
            and not (projection._forward_hooks or projection._forward_pre_hooks)

    def _patch_matmul(self, x, grid):
        """The non-overlapping conv as one matmul over the patches, written straight in the (batch, L, C) token
        layout: cuDNN's kernel for a bf16 16x16 / 16 conv took 0.44 ms of a Vim-T inference pass at batch 128
        (docs/benchmarks.md), a copy and a matmul take a fraction of it, and the tokens' transpose goes away."""
        (gh, gw), (kh, kw) = grid, self.kernel_size
        batch, channels = x.shape[:2]
        patches = x.reshape(batch, channels, gh, kh, gw, kw).permute(0, 2, 4, 1, 3, 5)  # (padded to whole patches)
        weight = self.projection.weight
        return F.linear(patches.reshape(batch, gh * gw, channels * kh * kw), weight.reshape(weight.shape[0], -1),
                        self.projection.bias)


class VimBlock(nn.Module):
    """Add -> norm -> mixer, carrying the residual stream separately (Mamba's block layout, which lets the add
    and the norm fuse). ``drop_path`` applies to the incoming mixer output, as in Vim."""

    def __init__(self, embed_dims, mixer_cfg, norm_cfg, drop_path, residual_in_fp32, fused_add_norm):
        super().__init__()
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1]
        self.mixer = MambaMixer(embed_dims, **mixer_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm

    def forward(self, hidden, residual):
        hidden = self.drop_path(hidden) if residual is not None else hidden
        normed, residual = add_norm(hidden, residual, self.norm, self.residual_in_fp32, self.fused_add_norm)
        return self.mixer(normed), residual


def _record_pos_embed_layout(module, state_dict, prefix, local_metadata):
    """State-dict hook: record the pos_embed's grid and class-token slot in the state dict's metadata, so that a
    checkpoint of any aspect loads into a model of another."""
    local_metadata['pos_embed_grid'] = list(module.train_grid)
    local_metadata['cls_token'] = module.cls_token_position


@MODELS.register_module()
class Vim(BaseModule):
    """Vision Mamba backbone for classification and dense prediction.

    Patches (with an optional class token in the middle or at the head, and absolute position embeddings) go
    through ``depth`` Mamba blocks; by default each block is Vim's bidirectional "v2" mixer. Every block uses the
    selective-scan ``discretization`` given here.

    Args:
        arch (str | dict): 'tiny', 'small', 'base' (embed 192/384/768, depth 24, the Vim paper's models) or 'test'
            (tiny, for unit tests), or a dict with keys ``embed_dims``, ``depth`` and optionally ``d_state``,
            ``expand``.
        img_size (int | tuple): training input size; sets the grid of the position embedding. Default: 224.
        patch_size (int | tuple): patch (kernel) size. Default: 16.
        stride (int | tuple, optional): patch stride; default ``patch_size`` (Vim's stride-8 models use 8).
        in_channels (int): image channels. Default: 3.
        bidirectional (bool): Vim's v2 block (a second, reversed scan with its own parameters). Default: True.
        divide_out (bool): average the two directions (Vim's ``if_divide_out``). Default: True.
        cls_token (str): 'middle' (Vim's default), 'head' or 'none'.
        pos_embed (bool): learned absolute position embedding. Default: True.
        rope (bool): 2-D rotary embedding of the hidden states before every block. Default: False.
        rope_residual (bool): also rotate the residual stream (Vim's ``if_rope_residual``). Default: False.
        out_type (str): what each output is: 'cls_token', 'mean' or 'max' over tokens ((B, C)), 'featmap' (NCHW
            patch map, for dense prediction) or 'raw' ((B, tokens, C)). Default: 'cls_token', or 'mean' when
            there is no class token.
        out_indices (int | Sequence[int]): blocks whose output is returned; -1 is the last. Default: -1.
        feature_source (str): what a returned block output is: 'stream' (the residual stream after the block,
            i.e. its input plus its mixer output; the last block's through the final norm) or 'mixer' (the
            block's mixer output alone, no residual and no final norm: hustvl/Vim's segmentation backbone
            ``VisionMambaSeg``; the final norm then gets no gradient, so DDP needs
            ``find_unused_parameters=True``). Default: 'stream'.
        frozen_stages (int): -1 freezes nothing; 0 freezes the patch embedding, class token and position
            embedding; k > 0 also the first k blocks (k = depth also the final norm).
        norm_cfg (dict): norm of the blocks and the final norm. Default: ``dict(type='mmssm.RMSNorm', eps=1e-5)``;
            ``dict(type='LN', eps=1e-5)`` for LayerNorm.
        residual_in_fp32 (bool): keep the residual stream in float32. Default: True.
        fused_add_norm (bool): residual add + norm in one Triton kernel (mmssm.ops.fused_add_norm) when the
            input is on CUDA (torch otherwise). Default: True.
        drop_rate (float): dropout after the position embedding. Default: 0.
        drop_path_rate (float): stochastic depth, rising linearly over the blocks. Default: 0.
        with_cp (bool): activation checkpointing of each block (saves memory, costs a second forward).
        discretization (str): the selective scan's method: 'zoh' (Mamba's, loads Vim weights unchanged), 'foh',
            'bilinear', 'poly', 'highorder' or 'rk4'. Default: 'zoh'.
        conv_type (str): 'conv' (Mamba's short causal convolution) or 'inverted_residual' (the MobileNetV2 variant).
        se_ratio (float, optional): squeeze-and-excitation after the gating with this reduction ratio (the SE
            variant). Default: None (no SE).
        mixer_cfg (dict, optional): further arguments of :class:`mmssm.models.layers.MambaMixer` (``d_conv``,
            ``dt_rank``, ``inverted_residual_cfg``, ``scan_backend``, ...).
        norm_eval (bool): keep batch norms (of the inverted-residual variant) in eval mode while training.
        init_cfg (dict, optional): MMEngine init config, e.g. ``dict(type='Pretrained', checkpoint=...)`` with a
            checkpoint in mmssm's layout (``tools/model_converters/vim2mmssm.py`` converts the original ones).
            ``checkpoint=None`` trains from scratch (the task configs' default, so that
            ``--cfg-options model.backbone.init_cfg.checkpoint=PATH`` sets it). A checkpoint none of whose keys
            fit this backbone is an error, not a silent random init.
        pruned_widths (dict, optional): per-block widths of a structurally pruned model, ``{'<block index>':
            {'d_inner': int}}``, written by ``tools/analysis/prune_export.py`` (see :mod:`mmssm.pruning.export`).
            Default: None (full widths).
    """

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(embed_dims=192, depth=24, d_state=16, expand=2)),
        **dict.fromkeys(['s', 'small'], dict(embed_dims=384, depth=24, d_state=16, expand=2)),
        **dict.fromkeys(['b', 'base'], dict(embed_dims=768, depth=24, d_state=16, expand=2)),
        'test': dict(embed_dims=32, depth=2, d_state=4, expand=2),
    }
    num_extra_tokens_of = dict(middle=1, head=1, none=0)

    def __init__(self, arch='tiny', img_size=224, patch_size=16, stride=None, in_channels=3, bidirectional=True,
                 divide_out=True, cls_token='middle', pos_embed=True, rope=False, rope_residual=False,
                 out_type=None, out_indices=-1, feature_source='stream', frozen_stages=-1, norm_cfg=None,
                 residual_in_fp32=True,
                 fused_add_norm=True, drop_rate=0., drop_path_rate=0., with_cp=False, discretization='zoh',
                 conv_type='conv', se_ratio=None, mixer_cfg=None, norm_eval=False, init_cfg=None,
                 pruned_widths=None):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = self.arch_settings['embed_dims']
        self.depth = self.arch_settings['depth']
        self.num_layers = self.depth  # the name mmpretrain's layer-decay and analysis tools look for
        if discretization not in METHODS:
            raise ValueError(f'Vim: unknown discretization {discretization!r}; choose one of {METHODS}.')
        if cls_token not in CLS_POSITIONS:
            raise ValueError(f'Vim: cls_token must be one of {CLS_POSITIONS}, got {cls_token!r}.')
        if out_type is None:
            out_type = 'mean' if cls_token == 'none' else 'cls_token'
        if out_type not in OUT_TYPES:
            raise ValueError(f'Vim: out_type must be one of {OUT_TYPES}, got {out_type!r}.')
        if feature_source not in FEATURE_SOURCES:
            raise ValueError(f'Vim: feature_source must be one of {FEATURE_SOURCES}, got {feature_source!r}.')
        if out_type == 'cls_token' and cls_token == 'none':
            raise ValueError("Vim: out_type='cls_token' needs a class token; set cls_token='middle' or 'head', "
                             "or pool with out_type='mean' / 'max'.")
        if rope_residual and not rope:
            raise ValueError('Vim: rope_residual=True needs rope=True.')
        if rope and self.embed_dims % 4:
            raise ValueError(f'Vim: rope needs embed_dims divisible by 4, got {self.embed_dims}.')
        if not 0 <= drop_rate < 1 or not 0 <= drop_path_rate < 1:
            raise ValueError(f'Vim: drop_rate and drop_path_rate must be in [0, 1), got {drop_rate}, '
                             f'{drop_path_rate}.')
        self.img_size = _to_2tuple(img_size, 'img_size')
        patch_size = _to_2tuple(patch_size, 'patch_size')
        stride = patch_size if stride is None else _to_2tuple(stride, 'stride')
        if any(s > p for s, p in zip(stride, patch_size)):
            raise ValueError(f'Vim: stride {stride} larger than patch_size {patch_size} would skip pixels.')
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
            raise ValueError(f'Vim: out_indices must be an int or a non-empty sequence, got {out_indices!r}.')
        self.out_indices = []
        for index in out_indices:
            if not isinstance(index, int) or not -self.depth <= index < self.depth:
                raise ValueError(f'Vim: out_indices entries must be ints in [-{self.depth}, {self.depth - 1}], '
                                 f'got {index!r} in {tuple(out_indices)}.')
            self.out_indices.append(index % self.depth)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= self.depth:
            raise ValueError(f'Vim: frozen_stages must be an int in [-1, {self.depth}], got {frozen_stages!r}.')

        self.cls_token_position = cls_token
        self.num_extra_tokens = self.num_extra_tokens_of[cls_token]
        self.out_type = out_type
        self.feature_source = feature_source
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.use_rope, self.rope_residual = rope, rope_residual
        self.discretization = discretization
        norm_cfg = dict(type='mmssm.RMSNorm', eps=1e-5) if norm_cfg is None else norm_cfg

        self.patch_embed = PatchEmbed(in_channels, self.embed_dims, patch_size, stride)
        self.train_grid = self.patch_embed.grid(self.img_size)
        num_patches = self.train_grid[0] * self.train_grid[1]
        if self.num_extra_tokens:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        if pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_extra_tokens, self.embed_dims))
            self._register_load_state_dict_pre_hook(self._resize_pos_embed_on_load)
            self.register_state_dict_post_hook(_record_pos_embed_layout)
        else:
            self.pos_embed = None
        self._register_load_state_dict_pre_hook(self._probe_load)
        self.drop_after_pos = nn.Dropout(drop_rate)
        self.rope = VisionRoPE2d(self.embed_dims, self.train_grid) if rope else None

        mixer_cfg = dict(mixer_cfg or {})
        for key, value in (('d_state', self.arch_settings.get('d_state', 16)),
                           ('expand', self.arch_settings.get('expand', 2)), ('bidirectional', bidirectional),
                           ('divide_out', divide_out), ('discretization', discretization),
                           ('conv_type', conv_type), ('se_ratio', se_ratio)):
            if key in mixer_cfg and mixer_cfg[key] != value:
                raise ValueError(f'Vim: {key} is set both as a Vim argument ({value!r}) and in mixer_cfg '
                                 f'({mixer_cfg[key]!r}); set it once, as the Vim argument.')
            mixer_cfg[key] = value
        rates = torch.linspace(0, drop_path_rate, self.depth).tolist()
        block_rates = [0.0] + rates[:-1]  # block i drops the output of block i - 1, as in Vim
        self.layers = nn.ModuleList([
            VimBlock(self.embed_dims, mixer_cfg, norm_cfg, block_rates[i], residual_in_fp32, fused_add_norm)
            for i in range(self.depth)
        ])
        self.final_drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm_f = build_norm_layer(norm_cfg, self.embed_dims)[1]
        self.residual_in_fp32 = residual_in_fp32
        self.fused_add_norm = fused_add_norm
        if pruned_widths:  # a structurally pruned model (tools/analysis/prune_export.py): narrower mixers
            from mmssm.pruning.export import apply_pruned_widths
            apply_pruned_widths(self, pruned_widths)
        self._freeze_stages()

    def _parse_arch(self, arch):
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(f'Vim: unknown arch {arch!r}; choose one of {sorted(set(self.arch_zoo))} or give '
                                 f'a dict with embed_dims and depth.')
            return dict(self.arch_zoo[arch.lower()])
        if isinstance(arch, dict):
            missing = {'embed_dims', 'depth'} - set(arch)
            unknown = set(arch) - {'embed_dims', 'depth', 'd_state', 'expand'}
            if missing or unknown:
                raise ValueError(f'Vim: an arch dict needs embed_dims and depth (optional d_state, expand); '
                                 f'missing {sorted(missing)}, unknown {sorted(unknown)} in {arch!r}.')
            for key in ('embed_dims', 'depth', 'd_state'):
                if key in arch and not (isinstance(arch[key], int) and arch[key] > 0):
                    raise ValueError(f'Vim: arch {key} must be a positive int, got {arch[key]!r}.')
            expand = arch.get('expand', 2)
            if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not expand > 0:
                raise ValueError(f'Vim: arch expand must be a positive number (inner channels = expand * '
                                 f'embed_dims; 2 in Vim), got {expand!r}.')
            return dict(arch)
        raise ValueError(f'Vim: arch must be a name or a dict, got {type(arch).__name__}.')

    # ------------------------------------------------------------------ init / loading
    def _init_cfgs(self):
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        return [cfg for cfg in cfgs if cfg is not None]

    def init_weights(self):
        cfgs = self._init_cfgs()
        pretrained = [cfg for cfg in cfgs if isinstance(cfg, dict) and cfg.get('type') in ('Pretrained',
                                                                                          PretrainedInit)]
        if pretrained and pretrained[0].get('checkpoint') is None:
            print_log('Vim: init_cfg Pretrained has checkpoint=None: training the backbone from scratch (set '
                      'model.backbone.init_cfg.checkpoint to a converted Vim checkpoint to fine-tune one).',
                      logger='current')
            given = self.init_cfg
            self.init_cfg = [cfg for cfg in cfgs if cfg is not pretrained[0]] or None
            try:
                self.init_weights()
            finally:
                self.init_cfg = given
            return
        if pretrained:
            self._load_probe = dict(matched=0, source_keys=[])
            try:
                super().init_weights()
                probe = self._load_probe
            finally:
                self._load_probe = None
            if not probe['matched']:
                raise ValueError(self._nothing_loaded_message(pretrained[0], probe['source_keys']))
            return
        super().init_weights()
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=.02)
        if self.num_extra_tokens:
            trunc_normal_(self.cls_token, std=.02)
        # LeCun normal truncated at 2 std, as Vim's patch embedding (timm's lecun_normal_): a standard normal cut
        # to [-2, 2], scaled so that the std is sqrt(1 / fan_in)
        weight = self.patch_embed.projection.weight
        std = math.sqrt(1.0 / weight[0].numel()) / TRUNC_NORMAL_2STD
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.patch_embed.projection.bias)
        for layer in self.layers:
            for module in layer.modules():
                if isinstance(module, nn.Linear) and module.bias is not None \
                        and not getattr(module.bias, '_no_reinit', False):
                    nn.init.zeros_(module.bias)
            # GPT-2 style: residual output projections scaled by 1/sqrt(depth)
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                layer.mixer.out_proj.weight /= math.sqrt(self.depth)

    _load_probe = None  # set while init_weights loads a Pretrained checkpoint

    def _probe_load(self, state_dict, prefix, *args, **kwargs):
        """While a Pretrained checkpoint loads: count the keys of this backbone it has."""
        if self._load_probe is None:
            return
        own = [prefix + name for name, _ in self.named_parameters()]
        self._load_probe['matched'] += sum(key in state_dict for key in own)
        self._load_probe['source_keys'] = list(state_dict)[:4]

    def _nothing_loaded_message(self, cfg, source_keys):
        source = ', '.join(repr(key) for key in source_keys) or 'no keys'
        if any(key.startswith('backbone.') for key in source_keys):
            fix = "it is a whole-model checkpoint: add prefix='backbone.' to the init_cfg"
        elif any(key.startswith('patch_embed.proj.') or key.startswith('model.') for key in source_keys) \
                or 'pos_embed' in source_keys:
            fix = ('it looks like an original hustvl/Vim checkpoint: convert it with '
                   'tools/model_converters/vim2mmssm.py --backbone-only')
        else:
            fix = ("give a checkpoint of an mmssm Vim (backbone keys such as 'patch_embed.projection.weight', "
                   "or 'backbone.*' with prefix='backbone.')")
        return (f"Vim: the init_cfg checkpoint {cfg.get('checkpoint')!r}"
                f"{' (prefix ' + repr(cfg['prefix']) + ')' if cfg.get('prefix') else ''} has none of this "
                f"backbone's weights, so nothing would be loaded; its keys begin {source}. Fix: {fix}.")

    def _pos_cls_index(self, num_patches, position=None):
        position = self.cls_token_position if position is None else position
        return {'middle': num_patches // 2, 'head': 0, 'none': None}[position]

    def _checkpoint_grid(self, num_patches, loaded_shape):
        """The patch grid of a checkpoint's pos_embed that does not record it: the square one or the one of this
        model's aspect, when exactly one of them exists."""
        rows, cols = self.train_grid
        plausible = set()
        side = math.isqrt(num_patches)
        if side * side == num_patches:
            plausible.add((side, side))
        for height in range(1, num_patches + 1):
            if num_patches % height == 0 and height * cols == (num_patches // height) * rows:
                plausible.add((height, num_patches // height))
        if len(plausible) == 1:
            return plausible.pop()
        found = (f'both {sorted(plausible)} fit' if plausible else
                 f'it is neither square nor of this model\'s aspect {rows}:{cols}')
        raise ValueError(
            f'Vim: cannot load pos_embed of shape {tuple(loaded_shape)} into {tuple(self.pos_embed.shape)}: cannot '
            f'tell its patch grid ({num_patches} patch slots): {found}, and the state dict does not record it '
            f'(state dicts of mmssm\'s Vim and of vim2mmssm.py do, in their metadata). Load '
            f'it into a Vim whose img_size / stride give its grid, or resize it first with '
            f'mmssm.models.layers.resize_pos_embed(pos_embed, src_grid, dst_grid, cls_index).')

    def _resize_pos_embed_on_load(self, state_dict, prefix, local_metadata, *args, **kwargs):
        """Fit a checkpoint's position embedding to this model: another grid (resolution or aspect) is resized; a
        class-token slot elsewhere is moved, or dropped for a model without one, when the checkpoint records where
        it is (state dicts of this class and of vim2mmssm.py record it, and the grid, in their metadata)."""
        key = prefix + 'pos_embed'
        if key not in state_dict:
            return
        loaded = state_dict[key]
        recorded_grid = local_metadata.get('pos_embed_grid')
        position = local_metadata.get('cls_token')  # None: not recorded
        if recorded_grid is None and position is None:
            if loaded.shape == self.pos_embed.shape:  # assume this model's layout, as nothing says otherwise
                return
            if prefix + 'cls_token' not in state_dict:
                position = 'none'
        elif loaded.shape == self.pos_embed.shape and position in (None, self.cls_token_position) \
                and (recorded_grid is None or tuple(recorded_grid) == self.train_grid):
            return
        if loaded.dim() != 3 or loaded.shape[0] != 1 or loaded.shape[-1] != self.embed_dims:
            raise ValueError(f'Vim: cannot load pos_embed of shape {tuple(loaded.shape)} into '
                             f'{tuple(self.pos_embed.shape)}: expected (1, tokens, {self.embed_dims}).')
        if self.cls_token_position == 'none' and position is None:
            raise ValueError(
                "Vim: the checkpoint has a class token (cls_token) but this Vim has cls_token='none', and the "
                "state dict does not record where the class token's pos_embed slot is. Set cls_token to the "
                "checkpoint's ('middle' for the released Vim models), or convert an original Vim checkpoint "
                "with tools/model_converters/vim2mmssm.py, which records it.")
        if self.cls_token_position != 'none' and position == 'none':
            raise ValueError(
                f"Vim: the checkpoint has no class token (no cls_token, and its metadata records none), but this Vim "
                f"has cls_token={self.cls_token_position!r}: its class token and that token's pos_embed slot would "
                f"be left untrained; set cls_token='none' (and out_type='mean' or 'featmap').")
        position = self.cls_token_position if position is None else position
        num_patches = loaded.shape[1] - self.num_extra_tokens_of[position]
        if recorded_grid is not None:
            grid = tuple(int(v) for v in recorded_grid)
            if grid[0] * grid[1] != num_patches:
                raise ValueError(f'Vim: the checkpoint records a {grid} pos_embed grid, but its pos_embed '
                                 f'{tuple(loaded.shape)} has {num_patches} patch slots.')
        else:
            grid = self._checkpoint_grid(num_patches, loaded.shape)
        resized = resize_pos_embed(loaded, grid, self.train_grid, self._pos_cls_index(num_patches, position))
        if position != self.cls_token_position:  # move the class token's slot to this model's place, or drop it
            size = self.train_grid[0] * self.train_grid[1]
            source = self._pos_cls_index(size, position)
            cls_embed = resized[:, source:source + 1]
            resized = torch.cat([resized[:, :source], resized[:, source + 1:]], dim=1)
            target = self._pos_cls_index(size)
            if target is not None:
                resized = torch.cat([resized[:, :target], cls_embed, resized[:, target:]], dim=1)
        state_dict[key] = resized


    # ------------------------------------------------------------------ training mode / freezing
    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed] + list(self.layers[:self.frozen_stages])
        if self.frozen_stages == self.depth:
            frozen.append(self.norm_f)
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        for name in ('cls_token', 'pos_embed'):
            param = getattr(self, name, None)
            if isinstance(param, nn.Parameter):
                param.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer id for layer-wise learning-rate decay: 0 for the embeddings, i + 1 for block i, and
        ``depth + 1`` for the final norm and anything outside the backbone. Returns (layer id, number of ids)."""
        num_layers = self.depth + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed') or name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('layers.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    # ------------------------------------------------------------------ forward
    def _rotate(self, tokens, grid, cls_index):
        if cls_index is None:
            return self.rope(tokens, grid)
        patches = torch.cat([tokens[:, :cls_index], tokens[:, cls_index + 1:]], dim=1)
        patches = self.rope(patches, grid)
        return torch.cat([patches[:, :cls_index], tokens[:, cls_index:cls_index + 1], patches[:, cls_index:]], 1)

    def _format(self, tokens, grid, cls_index):
        if self.out_type == 'raw':
            return tokens
        if self.out_type == 'cls_token':
            return tokens[:, cls_index]
        if self.out_type == 'mean':
            return tokens.mean(dim=1)
        if self.out_type == 'max':
            return tokens.amax(dim=1)
        if cls_index is not None:
            tokens = torch.cat([tokens[:, :cls_index], tokens[:, cls_index + 1:]], dim=1)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.embed_dims, *grid).contiguous()

    def embed(self, x: torch.Tensor):
        """Image -> (tokens (batch, L, C) after patch embedding, class token and position embedding, grid,
        class-token index or None): the input of the first block, shared with the token-pruning subclasses."""
        if x.dim() != 4:
            raise ValueError(f'Vim: expected a (batch, channels, height, width) image tensor, got {tuple(x.shape)}.')
        tokens, grid = self.patch_embed(x)
        num_patches = grid[0] * grid[1]
        cls_index = self._pos_cls_index(num_patches)
        if cls_index is not None:
            cls = self.cls_token.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([tokens[:, :cls_index], cls, tokens[:, cls_index:]], dim=1)
        if self.pos_embed is not None:
            pos_embed = resize_pos_embed(self.pos_embed, self.train_grid, grid,
                                         self._pos_cls_index(self.train_grid[0] * self.train_grid[1]))
            tokens = tokens + pos_embed
        return self.drop_after_pos(tokens), grid, cls_index

    def forward(self, x: torch.Tensor):
        hidden, grid, cls_index = self.embed(x)
        residual = None

        outs = {}
        last = self.depth - 1
        for index, layer in enumerate(self.layers):
            if self.rope is not None:
                hidden = self._rotate(hidden, grid, cls_index)
                if self.rope_residual and residual is not None:
                    residual = self._rotate(residual, grid, cls_index)
            if self.with_cp and hidden.requires_grad:
                hidden, residual = cp.checkpoint(layer, hidden, residual, use_reentrant=False)
            else:
                hidden, residual = layer(hidden, residual)
            if index in self.out_indices:
                if self.feature_source == 'mixer':
                    features = hidden
                elif index == last:
                    features, _ = add_norm(self.final_drop_path(hidden), residual, self.norm_f,
                                           self.residual_in_fp32, self.fused_add_norm)
                else:
                    features = residual + hidden
                outs[index] = self._format(features, grid, cls_index)
        return tuple(outs[index] for index in self.out_indices)
