import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import HOOKS, init_default_scope

from mmssm.engine.hooks.pruning import BasePruningHook, select_prunable
from mmssm.models.backbones.mamba_vision import MambaVision
from mmssm.models.backbones.vim import Vim

CONFIGS = sorted(glob.glob(osp.join(osp.dirname(__file__), '../../configs/cls/pruning/*.py')))


def test_there_is_a_demo_config_per_method():
    hooks = {h['type'] for path in CONFIGS for h in Config.fromfile(path).custom_hooks}
    assert {'mmssm.CosinePruningHook', 'mmssm.IMPRewindHook', 'mmssm.EarlyBirdHook',
            'mmssm.GradientSaliencyHook'} <= hooks


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_demo_config_builds_its_hooks(path):
    cfg = Config.fromfile(path)
    init_default_scope('mmpretrain')
    built = [HOOKS.build(dict(h)) for h in cfg.custom_hooks]
    pruning = [h for h in built if isinstance(h, BasePruningHook)]
    ema = [h for h in built if type(h).__name__ == 'EMAHook']
    assert len(pruning) == 1 and ema
    # the pruning hook must run before the EMA hook in after_train_iter (lower value = earlier)
    from mmengine.runner.priority import get_priority
    assert get_priority(pruning[0].priority) < get_priority(cfg.custom_hooks[0]['priority'])


@pytest.mark.parametrize('backbone', [lambda: Vim(arch='test', img_size=32), lambda: MambaVision(arch='test')])
def test_prunable_set_on_real_backbones(backbone):
    model = backbone()
    names = set(select_prunable(model))
    assert names, 'nothing prunable'
    for name in names:
        assert name.endswith('.weight') and 'norm' not in name and 'A_log' not in name, name
        assert not any(t in name for t in ('pos_embed', 'cls_token', 'bias')), name
    for name, _ in model.named_parameters():
        if name.endswith(('A_log', 'A_b_log', '.D', 'D_b', 'bias', 'pos_embed', 'cls_token')) or 'norm' in name:
            assert name not in names, name
