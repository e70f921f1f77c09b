import pytest
from mmengine.optim import build_optim_wrapper
from torch import nn

import mmssm.engine  # noqa: F401
from mmssm.models import Vim


class Model(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = Vim('test', img_size=32, patch_size=8)
        self.head = nn.Linear(32, 3)


def build(rate, **paramwise):
    return build_optim_wrapper(Model(), dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        constructor='mmssm.LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=rate, **paramwise)))


def test_rates_fall_with_depth_and_other_options_still_apply():
    wrapper = build(0.5, flat_decay_mult=0., custom_keys={'.A_log': dict(decay_mult=0.),
                                                            '.A_b_log': dict(decay_mult=0.)})
    groups = wrapper.optimizer.param_groups
    assert len(groups) == len(list(Model().parameters()))
    by_layer = {}
    for group in groups:
        by_layer.setdefault(group['layer_id'], set()).add(group['lr'])
    # test arch: depth 2 -> ids 0 (embeddings), 1, 2 (blocks), 3 (final norm and head)
    assert by_layer == {0: {1e-3 * 0.5 ** 3}, 1: {1e-3 * 0.5 ** 2}, 2: {1e-3 * 0.5}, 3: {1e-3}}
    a_log = [g for g in groups if g['params'][0].shape == (64, 4)]
    assert a_log and all(g['weight_decay'] == 0 for g in a_log)
    flat = [g for g in groups if g['params'][0].dim() == 1]
    assert flat and all(g['weight_decay'] == 0 for g in flat)


def test_bad_rate_and_model_without_depths():
    with pytest.raises(ValueError, match='layer_decay_rate must be in'):
        build(1.5)
    with pytest.raises(ValueError, match='get_layer_depth'):
        build_optim_wrapper(nn.Linear(2, 2), dict(
            type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1),
            constructor='mmssm.LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(layer_decay_rate=0.9)))
