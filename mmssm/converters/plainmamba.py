"""Convert checkpoints of the official PlainMamba (ChenhongyiYang/PlainMamba, an MMClassification 0.x
``ImageClassifier``) to mmssm's layout.

=========================================  ==========================================
original                                   mmssm
=========================================  ==========================================
``backbone.layers.{i}.mamba.*``            ``backbone.layers.{i}.mixer.*``
``backbone.norm1.*``                       ``backbone.norm_f.*``
``backbone.norm_layer{i}.*``               ``backbone.out_norms.{i}.*``
everything else (``patch_embed``,          unchanged
``pos_embed``, ``layers.{i}.norm/dw``,
``head.fc.*``)
=========================================  ==========================================

With ``backbone_only=True`` only the backbone's keys are kept, without the ``backbone.`` prefix.
"""
import re
from collections import OrderedDict

__all__ = ['convert_plainmamba_checkpoint', 'infer_plainmamba_arch']

WRAPPERS = ('state_dict', 'model')
REQUIRED = ('backbone.patch_embed.projection.weight', 'backbone.layers.0.mamba.direction_Bs',
            'backbone.layers.0.mamba.conv2d.weight')
RENAMES = ((re.compile(r'^backbone\.layers\.(\d+)\.mamba\.'), r'backbone.layers.\1.mixer.'),
           (re.compile(r'^backbone\.norm1\.'), 'backbone.norm_f.'),
           (re.compile(r'^backbone\.norm_layer(\d+)\.'), r'backbone.out_norms.\1.'))


def _unwrap(checkpoint):
    if not isinstance(checkpoint, dict):
        raise ValueError(f'Not a PlainMamba checkpoint: expected a dict, got {type(checkpoint).__name__}.')
    for wrapper in WRAPPERS:
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    state_dict = OrderedDict(checkpoint)
    if state_dict and all(key.startswith('module.') for key in state_dict):
        state_dict = OrderedDict((key[len('module.'):], value) for key, value in state_dict.items())
    if not any(key.startswith('backbone.') for key in state_dict) and REQUIRED[0][len('backbone.'):] in state_dict:
        state_dict = OrderedDict(('backbone.' + key, value) for key, value in state_dict.items())
    missing = [key for key in REQUIRED if key not in state_dict]
    if missing:
        raise ValueError(f'Not a PlainMamba checkpoint: it lacks {missing} (its first keys: '
                         f'{list(state_dict)[:5]}). Expected a checkpoint of ChenhongyiYang/PlainMamba.')
    return state_dict


def infer_plainmamba_arch(checkpoint) -> dict:
    """The ``arch`` dict of :class:`mmssm.models.backbones.PlainMamba` that fits an official checkpoint."""
    state_dict = _unwrap(checkpoint)
    depth = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(r'^backbone\.layers\.(\d+)\.', key)))
    mixer = 'backbone.layers.0.mamba.'
    embed_dims = state_dict['backbone.patch_embed.projection.weight'].shape[0]
    d_inner = state_dict[mixer + 'D'].shape[0]
    convs = {int(m.group(1)) for key in state_dict if (m := re.match(r'^backbone\.patch_embed\.convs\.(\d+)\.', key))}
    return dict(embed_dims=embed_dims, depth=depth, num_convs_patch_embed=len(convs) // 2 if convs else 0,
                layers_with_dwconv=tuple(sorted({int(m.group(1)) for key in state_dict
                                                 if (m := re.match(r'^backbone\.layers\.(\d+)\.dw\.', key))})),
                d_state=state_dict[mixer + 'A_log'].shape[1], expand=d_inner // embed_dims,
                conv_size=state_dict[mixer + 'conv2d.weight'].shape[-1])


def convert_plainmamba_checkpoint(checkpoint, backbone_only=False) -> OrderedDict:
    """Map an official PlainMamba checkpoint (or its state dict) to mmssm's ImageClassifier layout."""
    converted = OrderedDict()
    for key, value in _unwrap(checkpoint).items():
        new = key
        for pattern, replacement in RENAMES:
            new = pattern.sub(replacement, new)
        if backbone_only:
            if not new.startswith('backbone.'):
                continue
            new = new[len('backbone.'):]
        converted[new] = value
    return converted
