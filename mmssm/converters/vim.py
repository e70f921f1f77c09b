"""Convert checkpoints of the original Vision Mamba (hustvl/Vim, ``models_mamba.VisionMamba``) to mmssm's layout.

mmssm's :class:`~mmssm.models.backbones.Vim` keeps the original parameter names (Vim's ``VisionMamba`` and the
bimamba "v2" ``Mamba`` mixer of mamba-ssm), so the mapping is:

=====================================================  ==================================================
original                                               mmssm (MMPretrain ``ImageClassifier``)
=====================================================  ==================================================
``patch_embed.proj.{weight,bias}``                     ``backbone.patch_embed.projection.{weight,bias}``
``cls_token``, ``pos_embed``                           ``backbone.cls_token``, ``backbone.pos_embed``
``layers.{i}.norm.*``, ``layers.{i}.mixer.*``          ``backbone.layers.{i}.norm.*``, ``...mixer.*``
``norm_f.*``                                           ``backbone.norm_f.*``
``head.{weight,bias}``                                 ``head.fc.{weight,bias}`` (``LinearClsHead``)
``rope.freqs_cos``, ``rope.freqs_sin``                 dropped: mmssm computes the RoPE tables on the fly
=====================================================  ==================================================

With ``backbone_only=True`` the result holds only the backbone's keys, without the ``backbone.`` prefix, and the
classifier head is dropped.

Which file goes with which way of loading (MMEngine 0.10):

* the full form (``backbone.*`` + ``head.fc.*``): ``load_from=...`` of a runner, ``load_checkpoint(classifier,
  ...)``, or a backbone ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``: MMEngine's
  ``Pretrained`` with a prefix keeps only the keys that start with it and strips it (it fails if none does), so
  it needs the ``backbone.`` keys, i.e. the full form;
* the backbone-only form: a backbone ``init_cfg=dict(type='Pretrained', checkpoint=...)`` without ``prefix``,
  or ``load_checkpoint(backbone, ...)`` / ``backbone.load_state_dict(...)``.

``Pretrained`` loads with ``strict=False`` and only logs the keys that did not match; mmssm's Vim raises an error
when a checkpoint gives it none of its weights (the wrong form for the way of loading), but a partial match is only
logged: check the log for "missing keys".

The converted state dict records, in its metadata (as a state dict of mmssm's Vim does), the position
embedding's grid and where the class token was, so that the weights load into a Vim without a class token or of
another grid.
"""
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = [
    'VimConversion', 'compare_rope_tables', 'convert_vim_checkpoint', 'infer_vim_arch', 'vim_conversion',
    'vim_config_snippet'
]

# Parameters of mamba-ssm's ``Mamba`` mixer (bimamba "v2" adds the ``_b`` ones); mmssm's MambaMixer has the same.
MIXER_PARAMS = frozenset({
    'A_log', 'D', 'in_proj.weight', 'in_proj.bias', 'conv1d.weight', 'conv1d.bias', 'x_proj.weight',
    'dt_proj.weight', 'dt_proj.bias', 'out_proj.weight', 'out_proj.bias',
    'A_b_log', 'D_b', 'conv1d_b.weight', 'conv1d_b.bias', 'x_proj_b.weight', 'dt_proj_b.weight', 'dt_proj_b.bias',
})
TOP_LEVEL = {
    'patch_embed.proj.weight': 'patch_embed.projection.weight',
    'patch_embed.proj.bias': 'patch_embed.projection.bias',
    'cls_token': 'cls_token',
    'pos_embed': 'pos_embed',
    'norm_f.weight': 'norm_f.weight',
    'norm_f.bias': 'norm_f.bias',
}
HEAD = {'head.weight': 'head.fc.weight', 'head.bias': 'head.fc.bias'}
ROPE_BUFFERS = ('rope.freqs_cos', 'rope.freqs_sin')
REQUIRED = ('patch_embed.proj.weight', 'layers.0.mixer.in_proj.weight')
LAYER_REQUIRED = ('norm.weight', 'mixer.A_log', 'mixer.D', 'mixer.in_proj.weight', 'mixer.conv1d.weight',
                  'mixer.x_proj.weight', 'mixer.dt_proj.weight', 'mixer.dt_proj.bias', 'mixer.out_proj.weight')
LAYER_KEY = re.compile(r'^layers\.(\d+)\.(.+)$')
# Entries of a training checkpoint (Vim's main.py, DeiT-style) that hold no model weights.
WRAPPERS = ('model', 'state_dict')


@dataclass
class VimConversion:
    """The result of :func:`vim_conversion`.

    Attributes:
        state_dict: the converted state dict.
        mapped: (original key, new key) for every converted tensor.
        dropped: (original key, reason) for every tensor deliberately left out.
        arch: what :func:`infer_vim_arch` found.
        ignored_entries: entries of the checkpoint beside the model weights (optimizer, epoch, ...) that were
            not used.
    """
    state_dict: OrderedDict
    mapped: list = field(default_factory=list)
    dropped: list = field(default_factory=list)
    arch: dict = field(default_factory=dict)
    ignored_entries: list = field(default_factory=list)


def _unwrap(checkpoint):
    """Return (state dict, the checkpoint's other entries) from a training checkpoint or a bare state dict."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f'Not a Vim checkpoint: expected a dict (a state dict, or a training checkpoint with a '
                         f"'model' entry), got {type(checkpoint).__name__}.")
    others = []
    for wrapper in WRAPPERS:
        if isinstance(checkpoint.get(wrapper), dict):
            others = [key for key in checkpoint if key != wrapper]
            checkpoint = checkpoint[wrapper]
            break
    import torch  # here, not at the top: ``import mmssm`` imports this package and should stay light

    state_dict = OrderedDict(checkpoint)
    non_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if non_tensors:
        raise ValueError(f"Not a Vim checkpoint: expected a state dict of tensors (or a dict with one under 'model'), "
                         f'but these entries are no tensors: {_preview(non_tensors)}.')
    if state_dict and all(key.startswith('module.') for key in state_dict):  # saved from a DDP-wrapped model
        state_dict = OrderedDict((key[len('module.'):], value) for key, value in state_dict.items())
    return state_dict, others


def _preview(keys, limit=8):
    keys = list(keys)
    shown = ', '.join(repr(k) for k in keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def _check(state_dict):
    """Raise a ValueError for anything that is not a Vim checkpoint mmssm can load; return the depth."""
    if 'backbone.patch_embed.projection.weight' in state_dict or 'patch_embed.projection.weight' in state_dict:
        raise ValueError('Not an original Vim checkpoint: it already has mmssm\'s layout '
                         '(patch_embed.projection.weight); load it directly, without converting.')
    missing = [key for key in REQUIRED if key not in state_dict]
    if missing:
        raise ValueError(
            f'Not a Vim checkpoint: expected the keys of hustvl/Vim\'s VisionMamba ({", ".join(REQUIRED)}, '
            f'layers.<i>.mixer.*, norm_f.weight, ...), but {_preview(missing)} missing; the checkpoint has '
            f'{_preview(state_dict)}.')
    if 'cls_token_head' in state_dict or 'cls_token_tail' in state_dict:
        raise ValueError('Vim checkpoint with two class tokens (cls_token_head / cls_token_tail, the original '
                         'use_double_cls_token=True variant): mmssm\'s Vim supports one class token (middle or '
                         'head) or none, so this checkpoint cannot be converted.')
    layers = {}
    for key in state_dict:
        match = LAYER_KEY.match(key)
        if match:
            layers.setdefault(int(match.group(1)), set()).add(match.group(2))
    depth = len(layers)
    if sorted(layers) != list(range(depth)):
        raise ValueError(f'Vim checkpoint with layers {sorted(layers)}: expected layers 0..{depth - 1} without gaps.')
    gammas = [f'layers.{i}.mixer.gamma' for i in layers if 'mixer.gamma' in layers[i]]
    if gammas:
        raise ValueError(f'Vim checkpoint with layer scale ({_preview(gammas)}, the original init_layer_scale '
                         f'option): mmssm\'s Vim has no layer scale, so this checkpoint cannot be converted.')
    first = layers[0]
    incomplete = [f'layers.0.{name}' for name in LAYER_REQUIRED if name not in first]
    incomplete += [key for key in ('norm_f.weight',) if key not in state_dict]
    if incomplete:
        raise ValueError(f'Incomplete Vim checkpoint: {_preview(incomplete)} missing.')
    if 'mixer.A_b_log' in first and 'mixer.conv1d_b.weight' not in first:
        raise ValueError('Vim checkpoint with the bimamba "v1" mixer (A_b_log but no conv1d_b / x_proj_b / '
                         'dt_proj_b): mmssm supports the "v2" bidirectional mixer (and the one-directional one) '
                         'only, so this checkpoint cannot be converted.')
    for index in range(1, depth):
        if layers[index] != first:
            differ = sorted(layers[index] ^ first)
            raise ValueError(f'Vim checkpoint whose layers differ: layer {index} and layer 0 differ in '
                             f'{_preview(differ)}; mmssm builds every layer alike.')
    return depth


def _target(key, backbone_only):
    """(mmssm name, None) for an original key, or (None, why it is dropped); KeyError if it is unknown."""
    if key in TOP_LEVEL:
        return TOP_LEVEL[key], None
    if key in ROPE_BUFFERS:
        return None, 'RoPE table: mmssm computes it on the fly (set rope=True)'
    if key in HEAD:
        if backbone_only:
            return None, 'classifier head (--backbone-only)'
        return HEAD[key], None
    match = LAYER_KEY.match(key)
    if match:
        rest = match.group(2)
        if rest in ('norm.weight', 'norm.bias') or (rest.startswith('mixer.') and rest[6:] in MIXER_PARAMS):
            return key, None
    raise KeyError(key)


CLS_POSITIONS = ('middle', 'head')


def vim_conversion(checkpoint: dict, backbone_only: bool = False, cls_token: str = 'middle') -> VimConversion:
    """Convert an original Vim checkpoint and say what was mapped and dropped. See the module's docstring.

    ``cls_token`` is where the original put its class token ('middle', the released models'
    ``use_middle_cls_token=True``, or 'head'), which the weights cannot tell; it is recorded, with the position
    embedding's grid, in the state dict's metadata, so that mmssm's Vim can load the weights into a model without a
    class token (dropping that token's position-embedding slot) or of another grid.
    """
    if cls_token not in CLS_POSITIONS:
        raise ValueError(f'cls_token must be one of {CLS_POSITIONS} (where the original model put its class '
                         f'token), got {cls_token!r}.')
    state_dict, others = _unwrap(checkpoint)
    arch = infer_vim_arch(state_dict)
    if arch['cls_token'] != 'none':
        arch['cls_token'] = cls_token
    result = VimConversion(state_dict=OrderedDict(), arch=arch, ignored_entries=others)
    unknown = []
    for key, value in state_dict.items():
        try:
            new_key, reason = _target(key, backbone_only)
        except KeyError:
            unknown.append(key)
            continue
        if new_key is None:
            result.dropped.append((key, reason))
            continue
        if not backbone_only and not new_key.startswith('head.'):
            new_key = 'backbone.' + new_key
        result.state_dict[new_key] = value
        result.mapped.append((key, new_key))
    if unknown:
        raise ValueError(f'Vim checkpoint with keys the converter does not know (refusing to drop them silently): '
                         f'{_preview(unknown)}.')
    if arch['pos_embed']:  # read by Vim's pos_embed loading (the metadata a state dict of mmssm's Vim has)
        layout = dict(cls_token=arch['cls_token'])
        if arch['pos_grid'] is not None:
            layout['pos_embed_grid'] = list(arch['pos_grid'])
        result.state_dict._metadata = OrderedDict({'' if backbone_only else 'backbone': layout})
    return result


def convert_vim_checkpoint(checkpoint: dict, backbone_only: bool = False, cls_token: str = 'middle') -> dict:
    """Convert an original Vim (hustvl/Vim) checkpoint to mmssm's layout.

    Args:
        checkpoint (dict): a training checkpoint (with the weights under 'model') or a bare state dict; keys may
            carry DDP's 'module.' prefix.
        backbone_only (bool): return only the backbone's keys, without the 'backbone.' prefix, and drop the
            classifier head. Default: False (keys ``backbone.*`` and ``head.fc.*``, for an MMPretrain
            ``ImageClassifier`` with a ``LinearClsHead``).
        cls_token (str): where the original model put its class token: 'middle' (the released models) or
            'head'; recorded in the state dict's metadata (see :func:`vim_conversion`).

    Returns:
        OrderedDict: the converted state dict.

    Raises:
        ValueError: for a checkpoint that is not a Vim one, has keys the converter does not know, or a variant
            mmssm does not support (two class tokens, layer scale, the bimamba "v1" mixer).
    """
    return vim_conversion(checkpoint, backbone_only, cls_token).state_dict


def _int_if_whole(value):
    return int(value) if float(value).is_integer() else value


def infer_vim_arch(state_dict: dict) -> dict:
    """What the weights tell about the Vim model that produced them, as mmssm Vim arguments where possible.

    Returns a dict with ``embed_dims``, ``depth``, ``d_state``, ``expand`` (the ``arch`` dict), ``patch_size``,
    ``in_channels``, ``bidirectional`` (from ``A_b_log``), ``cls_token`` ('none' without a class token, else
    'middle', which is an assumption: see ``notes``), ``pos_embed``, ``pos_grid`` (the position embedding's square
    grid, or None), ``rope``, ``rope_grid``, ``norm`` ('rms' or 'ln', from the norms' bias), ``mixer_cfg`` (the
    mixer options that differ from mmssm's defaults), ``num_classes`` (None without a head) and ``notes`` (what
    the weights cannot tell: the stride, the class token's position, RoPE on the residual, ...).

    Accepts a bare state dict or a training checkpoint (as :func:`convert_vim_checkpoint`).
    """
    state_dict, _ = _unwrap(state_dict)
    depth = _check(state_dict)
    proj = state_dict['patch_embed.proj.weight']
    in_proj = state_dict['layers.0.mixer.in_proj.weight']
    embed_dims, in_channels = proj.shape[0], proj.shape[1]
    d_inner = in_proj.shape[0] // 2
    a_log = state_dict.get('layers.0.mixer.A_log')
    if a_log is None or proj.dim() != 4 or in_proj.shape[1] != embed_dims:
        raise ValueError(f'Not a Vim checkpoint: patch_embed.proj.weight {tuple(proj.shape)}, '
                         f'layers.0.mixer.in_proj.weight {tuple(in_proj.shape)} and layers.0.mixer.A_log '
                         f'{None if a_log is None else tuple(a_log.shape)} do not fit together.')
    patch_size = tuple(proj.shape[2:])
    dt_rank = state_dict['layers.0.mixer.dt_proj.weight'].shape[1]
    d_conv = state_dict['layers.0.mixer.conv1d.weight'].shape[-1]
    has_cls = 'cls_token' in state_dict
    rope = 'rope.freqs_cos' in state_dict
    notes = []
    arch = dict(embed_dims=embed_dims, depth=depth, d_state=a_log.shape[1], expand=_int_if_whole(d_inner / embed_dims),
                patch_size=patch_size[0] if patch_size[0] == patch_size[1] else patch_size,
                in_channels=in_channels, bidirectional='layers.0.mixer.A_b_log' in state_dict,
                cls_token='middle' if has_cls else 'none', pos_embed='pos_embed' in state_dict, pos_grid=None,
                rope=rope, rope_grid=None, norm='ln' if 'norm_f.bias' in state_dict else 'rms', mixer_cfg={},
                num_classes=state_dict['head.weight'].shape[0] if 'head.weight' in state_dict else None, notes=notes)
    if dt_rank != math.ceil(embed_dims / 16):
        arch['mixer_cfg']['dt_rank'] = dt_rank
    if d_conv != 4:
        arch['mixer_cfg']['d_conv'] = d_conv
    if 'layers.0.mixer.in_proj.bias' in state_dict:
        arch['mixer_cfg']['bias'] = True
    if 'layers.0.mixer.conv1d.bias' not in state_dict:
        arch['mixer_cfg']['conv_bias'] = False
    if arch['pos_embed']:
        num_patches = state_dict['pos_embed'].shape[1] - int(has_cls)
        side = math.isqrt(num_patches)
        if side * side == num_patches:
            arch['pos_grid'] = (side, side)
        else:
            notes.append(f'the position embedding has {num_patches} patch slots, not a square grid: set img_size, '
                         f'patch_size and stride so that the grid has that many patches.')
    if has_cls:
        notes.append("the class token's position cannot be told from the weights: cls_token='middle' is the "
                     "released models' (use_middle_cls_token=True); use 'head' (vim2mmssm.py --cls-token head) for "
                     "a model trained with it first.")
    else:
        notes.append("no class token: the original pooled with final_pool_type ('mean' -> out_type='mean'; its "
                     "default 'none' took the last token, which mmssm's Vim has no out_type for).")
    notes.append('the patch stride cannot be told from the weights: set stride=8 for the *_stride8 models '
                 '(stride defaults to patch_size).')
    if rope:
        cos = state_dict['rope.freqs_cos']
        side = math.isqrt(cos.shape[0])
        if side * side == cos.shape[0]:
            arch['rope_grid'] = (side, side)
        notes.append('RoPE was on (rope.freqs_cos/sin): set rope=True; whether it also rotated the residual '
                     '(if_rope_residual -> rope_residual=True) cannot be told from the weights.')
    if not arch['bidirectional']:
        notes.append('one-directional mixers: if the original used if_bidirectional=True (pairs of layers scanning '
                     'in opposite directions), mmssm cannot reproduce that model.')
    return arch


def vim_config_snippet(arch: dict, backbone_only: bool = False, checkpoint: str = 'CONVERTED.pth') -> str:
    """An MMPretrain model config for the weights described by ``arch`` (from :func:`infer_vim_arch`)."""
    from mmssm.models.backbones.vim import Vim  # lazy: keeps the converter light to import

    arch_dict = {key: arch[key] for key in ('embed_dims', 'depth', 'd_state', 'expand')}
    names = [name for name, value in Vim.arch_zoo.items() if value == arch_dict and len(name) > 1]
    lines = ['model = dict(', "    type='ImageClassifier',", '    backbone=dict(', "        type='mmssm.Vim',",
             f"        arch='{names[0]}',  # {arch_dict}" if names else f'        arch={arch_dict},']
    patch = arch['patch_size']
    if arch['pos_grid'] is not None and isinstance(patch, int):
        side = arch['pos_grid'][0]
        comment = f'{side}x{side} patches, if stride == patch_size'
        if patch > 8:
            comment += f'; for stride 8: img_size={(side - 1) * 8 + patch}'
        lines.append(f'        img_size={side * patch},  # {comment}')
    lines.append(f'        patch_size={patch},')
    lines.append('        # stride=8,  # cannot be told from the weights: for the *_stride8 models')
    if arch['in_channels'] != 3:
        lines.append(f"        in_channels={arch['in_channels']},")
    if not arch['bidirectional']:
        lines.append('        bidirectional=False,')
    if arch['cls_token'] == 'none':
        lines.append("        cls_token='none',")
        lines.append("        out_type='mean',")
    else:
        lines.append(f"        cls_token={arch['cls_token']!r},  # cannot be told from the weights (the converter's "
                     "--cls-token)")
    if not arch['pos_embed']:
        lines.append('        pos_embed=False,')
    if arch['rope']:
        lines.append('        rope=True,')
        lines.append('        # rope_residual=True,  # cannot be told from the weights: if_rope_residual of the '
                     'original')
    if arch['norm'] == 'ln':
        lines.append("        norm_cfg=dict(type='LN', eps=1e-5),")
    if arch['mixer_cfg']:
        lines.append(f"        mixer_cfg={arch['mixer_cfg']},")
    if backbone_only:
        lines.append(f"        init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}'),")
    else:
        lines.append(f"        init_cfg=dict(type='Pretrained', checkpoint='{checkpoint}', prefix='backbone.'),")
    lines.append('    ),')
    if arch['num_classes'] is not None:
        lines.append(f"    head=dict(type='LinearClsHead', num_classes={arch['num_classes']}, "
                     f"in_channels={arch['embed_dims']}),")
        if not backbone_only:
            lines.append(f"    # or, for the whole classifier (head included): load_from='{checkpoint}'")
    lines.append(')')
    return '\n'.join(lines)


def compare_rope_tables(state_dict: dict, atol: float = 1e-4):
    """Compare a checkpoint's RoPE tables (``rope.freqs_cos/sin``) with the ones mmssm's Vim computes for the same
    grid (with ``img_size = grid * patch_size``, stride = patch size). Returns None without RoPE tables, else
    (whether they match, a sentence saying so)."""
    state_dict, _ = _unwrap(state_dict)
    if 'rope.freqs_cos' not in state_dict or 'rope.freqs_sin' not in state_dict:
        return None
    from mmssm.models.layers.rope import VisionRoPE2d  # lazy: keeps the converter light to import

    cos, sin = state_dict['rope.freqs_cos'].float(), state_dict['rope.freqs_sin'].float()
    side = math.isqrt(cos.shape[0])
    if cos.dim() != 2 or side * side != cos.shape[0] or cos.shape[1] % 4 or sin.shape != cos.shape:
        return False, (f'the RoPE tables have shapes {tuple(cos.shape)} / {tuple(sin.shape)}, not (grid * grid, '
                       f'embed_dims) ones mmssm can compare with.')
    grid = (side, side)
    own_cos, own_sin = VisionRoPE2d(cos.shape[1], grid).cos_sin(grid, cos.device, cos.dtype)
    error = max((own_cos - cos).abs().max().item(), (own_sin - sin).abs().max().item())
    if error <= atol:
        return True, (f"the checkpoint's RoPE tables ({side}x{side} grid) match mmssm's (largest difference "
                      f'{error:.1e}).')
    return False, (f"the checkpoint's RoPE tables ({side}x{side} grid) differ from mmssm's by up to {error:.2g}: "
                   f'mmssm scales the positions to its training grid (img_size / stride), the original to '
                   f'pt_hw_seq_len (14 by default), so a model trained at another size than 224 with 16x16 '
                   f'patches gives other outputs in mmssm.')
