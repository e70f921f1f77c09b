"""Convert checkpoints of the official MambaVision (NVlabs/MambaVision) to mmssm's layout.

Two kinds of official checkpoints are understood:

* classification (``mambavision_*_1k.pth.tar``, the ImageNet-21K ``mambavision_L*_21k_*.pth.tar``): timm training
  checkpoints, ``{'state_dict': ..., 'args': Namespace, ...}`` or a bare state dict, keys of ``MambaVision``;
* detection / segmentation (``cascade_mask_rcnn_mamba_vision_*.pth``, ``mamba_vision_160k_ade20k-*.pth``): MMDetection
  / MMSegmentation checkpoints whose ``backbone.*`` keys are those of the official ``MM_mamba_vision``.

mmssm's :class:`~mmssm.models.backbones.MambaVision` keeps the official names inside the backbone, so the mapping is:

====================================================  ======================================================
official                                              mmssm
====================================================  ======================================================
``patch_embed.conv_down.*``, ``levels.*``             ``backbone.patch_embed.conv_down.*``, ``backbone.levels.*``
``norm.*`` (classifier's final BatchNorm)             ``backbone.norm3.*`` (``out_indices=(3,)``, ``out_norm='bn'``)
``head.{weight,bias}``                                ``head.fc.{weight,bias}`` (MMPretrain ``LinearClsHead``)
``backbone.outnorm{i}.*`` (dense LayerNorm2d)         ``backbone.norm{i}.*`` (``out_norm='ln2d'``)
``backbone.*`` of a detector / segmentor              ``backbone.*`` as above
``neck.*``, ``decode_head.*``, ``roi_head.*``, ...    unchanged (MMDetection / MMSegmentation's own modules)
====================================================  ======================================================

With ``backbone_only=True`` the result holds only the backbone's keys, without the ``backbone.`` prefix (no head,
neck or decode heads): for ``backbone.init_cfg=dict(type='Pretrained', checkpoint=...)``. The full form is for
``load_from=...`` of a classifier (or detector / segmentor), or for ``init_cfg=dict(type='Pretrained',
checkpoint=..., prefix='backbone.')``.

The weights fix every shape but not the attention heads nor the window sizes: those come from the arch table (the
closest official model; the 512-pixel 21K models differ from the 224/256 ones only in their windows, which the
checkpoint's name or its ``args.model`` tell).
"""
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

__all__ = [
    'MambaVisionConversion', 'convert_mambavision_checkpoint', 'infer_mambavision_arch', 'mambavision_config_snippet',
    'mambavision_conversion', 'verify_mambavision_conversion'
]

CANONICAL_ARCHS = ('tiny', 'tiny2', 'small', 'base', 'large', 'large2', 'large2-512', 'large3-256', 'large3-512')
DENSE_WINDOWS = {'detection': (8, 8, 112, 56), 'segmentation': (8, 8, 64, 32)}
_BACKBONE_TOP = re.compile(r'^(patch_embed\.conv_down|levels\.[0-3])\.')
_OUTNORM = re.compile(r'^outnorm([0-3])\.(.+)$')
_MMSSM_NORM = re.compile(r'^norm[0-3]\.')
_DENSE_HEADS = ('neck.', 'decode_head.', 'auxiliary_head.', 'rpn_head.', 'roi_head.', 'bbox_head.', 'mask_head.')
_DENSE_HEAD_TASK = {'decode_head.': 'segmentation', 'auxiliary_head.': 'segmentation', 'rpn_head.': 'detection',
                    'roi_head.': 'detection', 'bbox_head.': 'detection', 'mask_head.': 'detection'}


@dataclass
class MambaVisionConversion:
    """The result of :func:`mambavision_conversion`.

    Attributes:
        state_dict: the converted weights.
        arch: what the weights tell about the model (see :func:`infer_mambavision_arch`).
        kind: 'classification', 'detection' or 'segmentation' (from the checkpoint's non-backbone keys).
        mapped: (official key, mmssm key) of every backbone / head weight.
        kept: keys of a detector / segmentor outside its backbone, kept unchanged.
        dropped: (key, reason) of the weights left out.
        ignored_entries: the checkpoint's other top-level entries (optimizer, epoch, args, ...).
    """

    state_dict: OrderedDict
    arch: dict
    kind: str
    mapped: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    ignored_entries: list = field(default_factory=list)


def _is_state_dict(value):
    return isinstance(value, dict) and len(value) > 0 and all(isinstance(v, torch.Tensor) for v in value.values())


def _model_name(checkpoint):
    """The official model name a timm training checkpoint records ('arch', or 'args.model'), if any."""
    if not isinstance(checkpoint, dict):
        return None
    name = checkpoint.get('arch')
    if not isinstance(name, str):
        name = getattr(checkpoint.get('args'), 'model', None)
    return name if isinstance(name, str) else None


def _unwrap(checkpoint, use_ema=False):
    """The state dict inside a checkpoint, and the names of the checkpoint's other entries."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f'Not a MambaVision checkpoint: expected a dict (a state dict or a training checkpoint), '
                         f'got {type(checkpoint).__name__}.')
    if use_ema:
        if not _is_state_dict(checkpoint.get('state_dict_ema')):
            raise ValueError(f"use_ema=True, but the checkpoint has no 'state_dict_ema' (entries: "
                             f'{sorted(map(str, checkpoint))}).')
        key = 'state_dict_ema'
    else:
        key = next((k for k in ('state_dict', 'model') if _is_state_dict(checkpoint.get(k))), None)
    if key is None:
        if not _is_state_dict(checkpoint):
            raise ValueError(f"Not a MambaVision checkpoint: no 'state_dict' or 'model' entry holding weights, and not "
                             f'a bare state dict either (entries: {sorted(map(str, checkpoint))[:10]}).')
        state_dict, ignored = checkpoint, []
    else:
        state_dict, ignored = checkpoint[key], [k for k in checkpoint if k != key]
    if all(k.startswith('module.') for k in state_dict):  # saved from DistributedDataParallel
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    if sorted(state_dict)[0].startswith('encoder.'):  # as the official loader: a model wrapped as 'encoder'
        state_dict = {k[len('encoder.'):]: v for k, v in state_dict.items() if k.startswith('encoder.')}
    return dict(state_dict), ignored


def _split(state_dict):
    """(kind, backbone weights in the official layout, other weights, classifier head weights)."""
    keys = list(state_dict)
    if any(k.endswith(('mixer.A_b_log', 'patch_embed.proj.weight')) for k in keys) or \
            any(re.match(r'^(backbone\.)?layers\.\d+\.mixer\.', k) for k in keys):
        raise ValueError('Not a MambaVision checkpoint: it has the keys of a Vim (hustvl/Vim) model '
                         "('layers.N.mixer.*', 'patch_embed.proj.weight'); convert it with "
                         'tools/model_converters/vim2mmssm.py instead.')
    if 'backbone.patch_embed.conv_down.0.weight' in state_dict:
        backbone = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
        others = {k: v for k, v in state_dict.items() if not k.startswith('backbone.')}
        if 'head.fc.weight' in others or (any(_MMSSM_NORM.match(k) for k in backbone)
                                          and not any(k.startswith('outnorm') for k in backbone)):
            raise ValueError("This checkpoint is already in mmssm's layout ('backbone.norm{i}.*' / 'head.fc.*'): "
                             'load it directly, without converting.')
        tasks = {task for prefix, task in _DENSE_HEAD_TASK.items() if any(k.startswith(prefix) for k in others)}
        kind = tasks.pop() if len(tasks) == 1 else 'detection/segmentation'
        return kind, backbone, others, {}
    if 'patch_embed.conv_down.0.weight' in state_dict:
        if any(_MMSSM_NORM.match(k) for k in keys) and 'norm.weight' not in state_dict:
            raise ValueError("This checkpoint is already in mmssm's layout (backbone keys with 'norm{i}.*'): load it "
                             'directly, without converting.')
        head = {k: v for k, v in state_dict.items() if k.startswith('head.')}
        backbone = {k: v for k, v in state_dict.items() if not k.startswith('head.')}
        # a bare MM_mamba_vision state dict (the dense backbone alone) has its output norms
        dense = any(_OUTNORM.match(k) for k in backbone)
        return ('detection/segmentation' if dense else 'classification'), backbone, {}, head
    raise ValueError(f"Not a MambaVision checkpoint: no 'patch_embed.conv_down.0.weight' (classification) or "
                     f"'backbone.patch_embed.conv_down.0.weight' (detection / segmentation) key; its keys begin "
                     f'{sorted(keys)[:5]}.')


def _hybrid_kinds(backbone, stage, depth):
    kinds = []
    for j in range(depth):
        prefix = f'levels.{stage}.blocks.{j}.mixer.'
        if prefix + 'qkv.weight' in backbone:
            kinds.append('attention')
        elif prefix + 'A_log' in backbone:
            kinds.append('mamba')
        else:
            raise ValueError(f'Not a MambaVision checkpoint: levels.{stage}.blocks.{j} has neither an attention '
                             f"('mixer.qkv.weight') nor a Mamba mixer ('mixer.A_log').")
    return kinds


def infer_mambavision_arch(state_dict: dict, name_hint: str | None = None) -> dict:
    """What the weights tell about the MambaVision model that produced them, as mmssm arguments.

    Accepts an official checkpoint (classification or detection / segmentation, bare or wrapped) or its state dict.
    Returns a dict with ``arch`` (a name of :attr:`MambaVision.arch_zoo` when the weights match an official model,
    else an arch dict), ``arch_dict`` (the full settings), ``candidates`` (the official models the weights fit),
    ``in_channels``, ``mixer_cfg`` (mixer options that differ from MambaVision's defaults), ``out_indices`` and
    ``out_norm`` (of the outputs the weights have norms for), ``num_classes`` (None without a head) and ``notes``
    (what the weights cannot tell). ``name_hint`` (a file or model name) picks among official models that differ
    only in their windows ('512' in it picks a 512-pixel model).
    """
    raw, _ = _unwrap(state_dict)
    model_name = _model_name(state_dict)
    kind, backbone, _, head = _split(raw)
    return _infer(kind, backbone, head, name_hint=model_name or name_hint, from_record=model_name is not None)


def _infer(kind, backbone, head, name_hint=None, from_record=False):
    from mmssm.models.backbones.mamba_vision import MambaVision, num_mamba_blocks  # lazy: keeps this light

    notes = []
    stem = backbone['patch_embed.conv_down.0.weight']
    embed = backbone.get('patch_embed.conv_down.3.weight')
    if stem.dim() != 4 or embed is None or embed.dim() != 4:
        raise ValueError('Not a MambaVision checkpoint: patch_embed.conv_down.0/3 are not the two stem convolutions.')
    in_channels, stem_channels, embed_dims = stem.shape[1], stem.shape[0], embed.shape[0]
    depths = []
    for i in range(4):
        blocks = {int(m.group(1)) for k in backbone for m in [re.match(rf'^levels\.{i}\.blocks\.(\d+)\.', k)] if m}
        if not blocks or blocks != set(range(max(blocks) + 1)):
            raise ValueError(f'Not a MambaVision checkpoint: stage {i} (levels.{i}.blocks.N) has blocks '
                             f'{sorted(blocks)}, expected 0..depth-1.')
        depths.append(max(blocks) + 1)
    for i in (2, 3):
        kinds = _hybrid_kinds(backbone, i, depths[i])
        mamba = num_mamba_blocks(depths[i])
        expected = ['mamba'] * mamba + ['attention'] * (depths[i] - mamba)
        if kinds != expected:
            raise ValueError(f'Stage {i} of this checkpoint has blocks {kinds}, not the official split (the first '
                             f'ceil(depth / 2) = {mamba} Mamba, the rest attention) that mmssm builds.')
    fc1 = backbone['levels.2.blocks.0.mlp.fc1.weight']
    mlp_ratio = fc1.shape[0] / fc1.shape[1]
    mlp_ratio = int(mlp_ratio) if mlp_ratio.is_integer() else mlp_ratio
    arch = dict(embed_dims=embed_dims, stem_channels=stem_channels, depths=depths, num_heads=None, window_size=None,
                mlp_ratio=mlp_ratio,
                layer_scale=1e-5 if 'levels.2.blocks.0.gamma_1' in backbone else None,
                layer_scale_conv=1e-5 if 'levels.0.blocks.0.gamma' in backbone else None)

    mixer = 'levels.2.blocks.0.mixer.'
    dims = embed_dims * 4
    d_inner = backbone[mixer + 'in_proj.weight'].shape[0]
    mixer_cfg = {}
    expand = d_inner / dims
    if expand != 1:
        mixer_cfg['expand'] = int(expand) if expand.is_integer() else expand
    d_state = backbone[mixer + 'A_log'].shape[1]
    if d_state != 8:
        mixer_cfg['d_state'] = d_state
    d_conv = backbone[mixer + 'conv1d_x.weight'].shape[-1]
    if d_conv != 3:
        mixer_cfg['d_conv'] = d_conv
    ranks = {i: backbone[f'levels.{i}.blocks.0.mixer.dt_proj.weight'].shape[1] for i in (2, 3)}
    if any(rank != math.ceil(embed_dims * 2 ** i / 16) for i, rank in ranks.items()):
        if ranks[2] != ranks[3]:
            raise ValueError(f'dt_proj ranks {ranks} of stages 2 and 3 are neither ceil(channels / 16) nor one '
                             f'value: mmssm cannot build this model.')
        mixer_cfg['dt_rank'] = ranks[2]
    if mixer + 'conv1d_x.bias' in backbone:
        mixer_cfg['conv_bias'] = True
    if mixer + 'in_proj.bias' in backbone:
        mixer_cfg['bias'] = True

    comparable = ('embed_dims', 'stem_channels', 'depths', 'mlp_ratio', 'layer_scale', 'layer_scale_conv')
    candidates = [name for name in CANONICAL_ARCHS
                  if all(_same(MambaVision.arch_zoo[name][k], arch[k]) for k in comparable)]
    name = _pick(candidates, name_hint)
    if name is not None:
        official = MambaVision.arch_zoo[name]
        arch['num_heads'] = list(official['num_heads'])
        arch['window_size'] = list(official['window_size'])
        arch['drop_path_rate'] = official['drop_path_rate']
        if len(candidates) > 1:
            how = f"the recorded model name {name_hint!r}" if from_record else (
                f'the name {name_hint!r}' if name_hint else 'no name to go by')
            notes.append(f'the weights fit {candidates}, which differ only in their window sizes; {name!r} was '
                         f'picked from {how}.')
    else:
        notes.append('the weights match no official MambaVision model: num_heads and window_size cannot be told '
                     'from them; fill them in (they change no weight shape).')
    if kind != 'classification':
        outnorms = sorted(int(m.group(1)) for k in backbone for m in [_OUTNORM.match(k)] if m and
                          m.group(2) == 'weight')
        out_indices, out_norm = outnorms, 'ln2d'
        windows = DENSE_WINDOWS.get(kind)
        notes.append('window sizes of a detection / segmentation model come from its training config, not the '
                     'weights: the official detection configs use (8, 8, 112, 56), the segmentation ones '
                     f'(8, 8, 64, 32){"" if windows is None else f"; {kind} assumed"}.')
        if windows is not None:
            arch['window_size'] = list(windows)
        if any(k.startswith('norm.') for k in backbone):
            notes.append("the backbone still holds the classifier's final norm ('norm.*'): dropped.")
    else:
        out_indices, out_norm = [3], 'bn'
    arch_dict = dict(arch)
    return dict(arch=name if name is not None else arch_dict, arch_dict=arch_dict, candidates=candidates,
                in_channels=in_channels, mixer_cfg=mixer_cfg, out_indices=out_indices, out_norm=out_norm,
                num_classes=head['head.weight'].shape[0] if 'head.weight' in head else None, kind=kind, notes=notes)


def _same(a, b):
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _pick(candidates, hint):
    if not candidates:
        return None
    hint = (hint or '').lower()
    for name in candidates:
        resolution = name.rpartition('-')[2]
        if resolution.isdigit() and resolution in hint:
            return name
    # the 224 / 256-pixel model unless the name says 512
    return next((n for n in candidates if not n.endswith('-512')), candidates[0])


def mambavision_conversion(checkpoint: dict, backbone_only: bool = False, use_ema: bool = False,
                           name_hint: str | None = None) -> MambaVisionConversion:
    """Convert an official MambaVision checkpoint; see the module docstring for the key mapping.

    Args:
        checkpoint: the loaded file: a timm training checkpoint (``state_dict``, ``args``, ...), an MMEngine
            checkpoint of a detector / segmentor, or a bare state dict.
        backbone_only: keep only the backbone's weights, without the ``backbone.`` prefix.
        use_ema: convert the ``state_dict_ema`` of a timm checkpoint instead of ``state_dict``.
        name_hint: the file or model name, to tell apart official models that differ only in their windows.

    Raises:
        ValueError: for something that is not an official MambaVision checkpoint (a Vim one, an already converted
            one, a file without weights), or weights with keys the official models do not have.
    """
    state_dict, ignored = _unwrap(checkpoint, use_ema)
    kind, backbone, others, head = _split(state_dict)
    model_name = _model_name(checkpoint)
    arch = _infer(kind, backbone, head, name_hint=model_name or name_hint, from_record=model_name is not None)
    result = MambaVisionConversion(OrderedDict(), arch, kind, ignored_entries=ignored)
    prefix = '' if backbone_only else 'backbone.'
    unknown = []
    for key, value in backbone.items():
        outnorm = _OUTNORM.match(key)
        if _BACKBONE_TOP.match(key):
            new = key
        elif outnorm:
            new = f'norm{outnorm.group(1)}.{outnorm.group(2)}'
        elif key.startswith('norm.'):
            if kind != 'classification':
                result.dropped.append((key, "the classifier's final norm, unused by the dense backbone"))
                continue
            new = 'norm3.' + key[len('norm.'):]
        else:
            unknown.append(key)
            continue
        result.state_dict[prefix + new] = value
        result.mapped.append(((key if kind == 'classification' else 'backbone.' + key), prefix + new))
    if unknown:
        raise ValueError(f'Keys that no official MambaVision backbone has: {sorted(unknown)[:10]}'
                         f'{" ..." if len(unknown) > 10 else ""}; is this a modified model?')
    for key, value in head.items():
        if key not in ('head.weight', 'head.bias'):
            raise ValueError(f'Unknown classifier head key {key!r}: expected head.weight and head.bias.')
        if backbone_only:
            result.dropped.append((key, 'the classifier head (backbone_only)'))
            continue
        result.state_dict['head.fc.' + key[len('head.'):]] = value
        result.mapped.append((key, 'head.fc.' + key[len('head.'):]))
    for key, value in others.items():
        if backbone_only:
            result.dropped.append((key, 'outside the backbone (backbone_only)'))
        else:
            result.state_dict[key] = value
            result.kept.append(key)
    return result


def convert_mambavision_checkpoint(checkpoint: dict, backbone_only: bool = False,
                                   use_ema: bool = False) -> OrderedDict:
    """The converted state dict of :func:`mambavision_conversion`."""
    return mambavision_conversion(checkpoint, backbone_only, use_ema).state_dict


def _backbone_kwargs(arch: dict) -> dict:
    arch_dict = dict(arch['arch_dict'])
    if arch_dict['num_heads'] is None:  # shapes only: any head count that divides the channels
        arch_dict['num_heads'] = [1, 1, 1, 1]
    if arch_dict['window_size'] is None:
        arch_dict['window_size'] = [8, 8, 7, 7]
    return dict(arch=arch_dict, in_channels=arch['in_channels'], out_indices=arch['out_indices'] or [3],
                out_norm=arch['out_norm'], mixer_cfg=arch['mixer_cfg'])


def verify_mambavision_conversion(result: MambaVisionConversion) -> None:
    """Load the converted backbone weights, strictly, into an mmssm MambaVision built (on the meta device, so
    nothing is allocated) from the inferred settings; raise ValueError saying what does not fit."""
    from mmssm.models.backbones.mamba_vision import MambaVision  # lazy: keeps this light

    if any(k.startswith('backbone.') for k in result.state_dict):
        weights = {k[len('backbone.'):]: v for k, v in result.state_dict.items() if k.startswith('backbone.')}
    else:
        weights = dict(result.state_dict)
    with torch.device('meta'):
        model = MambaVision(**_backbone_kwargs(result.arch))
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f'The converted weights do not load into mmssm.MambaVision({_backbone_kwargs(result.arch)})'
                         f': {error}') from None


def mambavision_config_snippet(arch: dict, backbone_only: bool = False, checkpoint: str = 'CONVERTED.pth') -> str:
    """An MMPretrain / MMDetection / MMSegmentation model config for the weights described by ``arch`` (from
    :func:`infer_mambavision_arch` or a conversion's ``arch``)."""
    name = arch['arch']
    dense = arch['kind'] != 'classification'
    lines = ['model = dict(']
    if not dense:
        lines.append("    type='ImageClassifier',")
    lines += ['    backbone=dict(', "        type='mmssm.MambaVision',",
              f"        arch='{name}'," if isinstance(name, str) else f'        arch={name},']
    if not isinstance(name, str):
        lines.append('        # fill in num_heads and window_size: the weights do not tell them')
    if arch['in_channels'] != 3:
        lines.append(f"        in_channels={arch['in_channels']},")
    if dense:
        lines.append(f"        out_indices={tuple(arch['out_indices'])},")
        lines.append("        out_norm='ln2d',")
        if isinstance(name, str) and arch['arch_dict']['window_size'] is not None:
            lines.append(f"        window_size={tuple(arch['arch_dict']['window_size'])},  # from the training "
                         'config, not the weights')
    if arch['mixer_cfg']:
        lines.append(f"        mixer_cfg={arch['mixer_cfg']},")
    lines.append("        # discretization='zoh',  # the official weights' method; any other changes the function")
    prefix = '' if backbone_only else ", prefix='backbone.'"
    lines.append(f"        init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}'{prefix}),")
    lines.append('    ),')
    if not dense:
        lines.append("    neck=dict(type='GlobalAveragePooling'),")
        if arch['num_classes'] is not None:
            channels = arch['arch_dict']['embed_dims'] * 8
            lines.append(f"    head=dict(type='LinearClsHead', num_classes={arch['num_classes']}, "
                         f'in_channels={channels}),')
        if not backbone_only:
            lines.append(f"    # or, for the whole classifier (head included): load_from='{checkpoint}'")
    elif not backbone_only:
        lines.append(f"    # neck and heads included: load_from='{checkpoint}'")
    lines.append(')')
    return '\n'.join(lines)
