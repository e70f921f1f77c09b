"""Physically remove dead structured units (see :mod:`.structure`): smaller Linear / Conv1d / Parameter tensors,
same output. The widths that result are what ``Vim(pruned_widths=...)`` / ``MambaVision(pruned_widths=...)``
take to rebuild the smaller model from its config.

``pruned_widths`` format (string keys, so configs dump cleanly):

* Vim: ``{'<block index>': {'d_inner': int}}``, e.g. ``{'3': {'d_inner': 384}}``.
* MambaVision: ``{'<stage>.<block>': {'d_inner': int (Mamba blocks; both halves, even) | 'num_heads': int
  (attention blocks), 'mlp_hidden': int}}`` for hybrid blocks, ``{'conv_hidden': int}`` for conv blocks (the
  channels between conv1 and conv2; a ConvNeXt block's bottleneck units), e.g. ``{'2.1': {'num_heads': 4,
  'mlp_hidden': 640}, '0.0': {'conv_hidden': 48}}``.
"""
import torch
from torch import nn

from .structure import dead_units, structured_groups, unit_indices

# group name suffix -> (module name suffix to strip, width key)
_KEYS = {'.d_inner': ('.mixer', 'd_inner'), '.heads': ('.mixer', 'num_heads'), '.hidden': ('.mlp', 'mlp_hidden'),
         '.channels': ('', 'conv_hidden')}


def _keep_units(model, group, keep):
    """Keep units ``keep`` (sorted) of ``group`` in ``model``, removing every member slice of the others."""
    drop = [u for u in range(group.size) if u not in set(keep)]
    if not drop:
        return
    params = dict(model.named_parameters())
    params.update(model.named_buffers())
    removed = {}
    for member in group.members:
        removed.setdefault((member.param, member.dim), set()).update(unit_indices(member, drop))
    with torch.no_grad():
        for (name, dim), indices in removed.items():
            param = params[name]
            kept = torch.tensor([i for i in range(param.shape[dim]) if i not in indices], device=param.device)
            param.data = param.data.index_select(dim, kept).contiguous()
    module_name = group.name.rsplit('.', 1)[0]
    _sync_metadata(model.get_submodule(module_name))


def _sync_metadata(module):
    """Make module attributes (features, channels, groups, d_inner, heads) agree with the new tensor shapes."""
    from mmssm.models.layers.mamba_mixer import MambaMixer
    from mmssm.models.layers.self_attention import MultiheadSelfAttention
    from mmssm.models.layers.split_conv_mixer import SplitConvMixer
    from mmssm.models.layers.window_attention import _WindowTokenAttention
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sub.out_features, sub.in_features = sub.weight.shape
        elif isinstance(sub, nn.modules.conv._ConvNd) and sub.groups > 1:  # depthwise
            sub.out_channels = sub.in_channels = sub.groups = sub.weight.shape[0]
        elif isinstance(sub, nn.modules.conv._ConvNd):
            sub.out_channels, sub.in_channels = sub.weight.shape[:2]
        elif isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.num_features = sub.weight.shape[0]
    if isinstance(module, MambaMixer):
        module.d_inner = module.out_proj.in_features
    elif isinstance(module, SplitConvMixer):
        module.d_inner = module.out_proj.in_features
    elif isinstance(module, (MultiheadSelfAttention, _WindowTokenAttention)):
        module.num_heads = module.qkv.out_features // (3 * module.head_dims)


def _backbone_prefix(model):
    from mmssm.models.backbones.mamba_vision import MambaVision
    from mmssm.models.backbones.vim import Vim
    for name, module in model.named_modules():
        if isinstance(module, (Vim, MambaVision)):
            return name, module
    raise ValueError(f'export_pruned: no Vim or MambaVision backbone in {type(model).__name__}; only those '
                     f'backbones take pruned_widths.')


def _block_key(path):
    """'layers.3' -> '3'; 'levels.2.blocks.1' -> '2.1'."""
    parts = path.split('.')
    if parts[0] == 'layers':
        return parts[1]
    if parts[0] == 'levels' and parts[2] == 'blocks':
        return f'{parts[1]}.{parts[3]}'
    raise ValueError(f'export_pruned: unexpected block path {path!r}.')


def widths_of(model):
    """The current ``pruned_widths`` dict of the Vim / MambaVision backbone in ``model`` (all its groups)."""
    prefix, backbone = _backbone_prefix(model)
    widths = {}
    for group in structured_groups(backbone):
        for suffix, (module_suffix, key) in _KEYS.items():
            if group.name.endswith(suffix):
                owner = group.name[:-len(suffix)]
                block = owner[:len(owner) - len(module_suffix)]
                size = group.size * 2 if group.kind == 'ssm_channel' and block.startswith('levels') else group.size
                widths.setdefault(_block_key(block), {})[key] = size
    return widths


@torch.no_grad()
def export_pruned(model: nn.Module, units: dict = None):
    """Remove units of the structured groups of ``model`` in place; return ``(model, pruned_widths)``.

    ``units`` (group name -> unit indices, e.g. :func:`~mmssm.pruning.structure.masked_units` of the masks a
    pruning hook saved) says which to remove; each must be dead (its kill members zero), else a ValueError. Default:
    every dead unit. A group whose units all go keeps one (zero-width layers are not supported); it stays dead, so
    the output is unchanged. ``pruned_widths`` covers every group of the backbone (pruned or not).
    """
    for group in structured_groups(model):
        dead = set(dead_units(model, group))
        remove = dead if units is None else set(units.get(group.name, ()))
        live = sorted(remove - dead)
        if live:
            raise ValueError(f'export_pruned: units {live[:8]} of {group.name} are to be removed but their kill '
                             f'members are not zero, so removing them would change the output; the masks were '
                             f'not applied to these weights (a checkpoint written without the pruning hook?).')
        keep = [u for u in range(group.size) if u not in remove] or [min(remove)]
        _keep_units(model, group, keep)
    return model, widths_of(model)


def apply_pruned_widths(backbone: nn.Module, pruned_widths: dict):
    """Shrink a freshly built Vim / MambaVision to ``pruned_widths`` (its first units kept), so that an exported
    state dict loads strictly. Called by the backbones' constructors; checks every key and width."""
    groups = {g.name: g for g in structured_groups(backbone)}
    full = widths_of(backbone)
    for key, entry in dict(pruned_widths).items():
        key = str(key)
        if key not in full:
            raise ValueError(f'pruned_widths: unknown block {key!r}; this model has {sorted(full)}.')
        if not isinstance(entry, dict) or set(entry) - set(full[key]):
            raise ValueError(f'pruned_widths[{key!r}] must be a dict with keys among {sorted(full[key])}, got '
                             f'{entry!r}.')
        for width_key, width in entry.items():
            limit = full[key][width_key]
            is_mv_ssm = width_key == 'd_inner' and '.' in key
            if not isinstance(width, int) or not 0 < width <= limit or (is_mv_ssm and width % 2):
                raise ValueError(f'pruned_widths[{key!r}][{width_key!r}] must be an int in [1, {limit}]'
                                 f"{' and even' if is_mv_ssm else ''}, got {width!r}.")
            block = f'layers.{key}' if '.' not in key else 'levels.{}.blocks.{}'.format(*key.split('.'))
            suffix = {'d_inner': '.mixer.d_inner', 'num_heads': '.mixer.heads', 'mlp_hidden': '.mlp.hidden',
                      'conv_hidden': '.channels'}[width_key]
            group = groups[block + suffix]
            _keep_units(backbone, group, list(range(width // 2 if is_mv_ssm else width)))
