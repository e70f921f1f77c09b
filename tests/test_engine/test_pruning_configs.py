import functools
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import HOOKS, init_default_scope

from mmssm.engine.hooks.pruning import BasePruningHook, select_prunable
from mmssm.models.backbones.mamba_vision import MambaVision
from mmssm.models.backbones.vim import Vim

CONFIGS = sorted(glob.glob(osp.join(osp.dirname(__file__), '../../configs/cls/pruning/*.py')))
METHODS = {'cosine': 'mmssm.CosinePruningHook', 'imp': 'mmssm.IMPRewindHook', 'early_bird': 'mmssm.EarlyBirdHook',
           'snip': 'mmssm.GradientSaliencyHook'}


@functools.cache
def own(path) -> dict:
    """The names a config file sets itself, without its bases (parsing the mmpretrain:: bases takes ~1.5 s a file;
    the slow test parses them). A pruning config's ``custom_hooks`` replaces its base's list entirely."""
    namespace = {}
    with open(path) as f:
        exec(compile(f.read(), path, 'exec'), namespace)
    return namespace


def pruning_hook_cfg(path):
    return next(h for h in own(path)['custom_hooks'] if h['type'] in METHODS.values())


@pytest.mark.parametrize('family', ['vim-tiny-p16', 'mambavision-tiny'])
def test_there_is_a_demo_config_per_method_and_backbone(family):
    names = {osp.basename(p): p for p in CONFIGS}
    for method, hook_type in METHODS.items():
        path = names[f'{family}_demo_{method}.py']
        assert own(path)['_base_'] == f'../{family}_demo.py'
        assert pruning_hook_cfg(path)['type'] == hook_type


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_demo_config_builds_its_hooks(path):
    hooks = own(path)['custom_hooks']
    init_default_scope('mmpretrain')
    built = [HOOKS.build(dict(h)) for h in hooks]
    pruning = [h for h in built if isinstance(h, BasePruningHook)]
    ema = [h for h in built if type(h).__name__ == 'EMAHook']
    assert len(pruning) == 1 and ema
    # the pruning hook must run before the EMA hook in after_train_iter (lower value = earlier)
    from mmengine.runner.priority import get_priority
    assert get_priority(pruning[0].priority) < get_priority(hooks[0]['priority'])


def test_mambavision_structured_demos_are_channel_granularity():
    """The cosine and early-bird MambaVision demos prune whole units (exportable); early-bird scores the conv
    stages' channels by BN scales ('auto')."""
    for method in ('cosine', 'early_bird'):
        path = next(p for p in CONFIGS if osp.basename(p) == f'mambavision-tiny_demo_{method}.py')
        assert pruning_hook_cfg(path)['granularity'] == 'channel'
    assert pruning_hook_cfg(next(p for p in CONFIGS if 'mambavision-tiny_demo_early_bird' in p))['score'] == 'auto'


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


def _shrink(cfg, work_dir, data_root):
    """The config's schedule, hooks and data layout; the 'test' arch and the demo data under ``data_root``."""
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.arch = 'test'
    cfg.model.backbone.pop('drop_path_rate', None)
    cfg.model.head.in_channels = 32 if cfg.model.backbone.type == 'mmssm.Vim' else 64
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].update(num_workers=0, persistent_workers=False)
        cfg[split].dataset.data_root = str(data_root)
    cfg.default_hooks.logger.interval = 100
    cfg.log_level = 'WARNING'


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_demo_config_reaches_its_target_sparsity(path, tmp_path):
    """The whole demo schedule on the 'test' arch: the pruning hook reaches its target (the ticket is drawn)."""
    import torch
    from mmengine.runner import Runner

    from mmssm.datasets.demo_data import make_demo_data
    from mmssm.utils.launch import add_weights_only_hook
    make_demo_data(tmp_path / 'demo', tasks='cls', progress=False)
    cfg = Config.fromfile(path)
    _shrink(cfg, tmp_path / 'work', tmp_path / 'demo' / 'imagenet')
    add_weights_only_hook(cfg)  # as tools/train.py does
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, BasePruningHook))
    hook_cfg = pruning_hook_cfg(path)
    stats = hook.masks.sparsity()
    if 'prune_ratio' in hook_cfg:  # early-bird: the ticket's fraction of channels
        assert hook.drawn_epoch >= 0
        target = hook_cfg['prune_ratio']
    else:
        target = hook_cfg['target_sparsity']
    if hook.granularity == 'weight':
        assert stats['total'] == pytest.approx(target, abs=0.02)
    else:  # units: per group (layer scope), BN channels under one global threshold
        bn = getattr(hook, 'bn_groups', {})
        for group in hook.masks.groups:
            if group.name not in bn:
                expected = min(round(target * group.size), group.size - 1)
                assert int((~hook.masks.units[group.name]).sum()) == expected, group.name
        sizes = [g.size for g in hook.masks.groups if g.name in bn]
        assert sum(int((~hook.masks.units[n]).sum()) for n in bn) == round(target * sum(sizes))
    last = torch.load(tmp_path / 'work' / f'epoch_{cfg.train_cfg.max_epochs}.pth', weights_only=True)
    for name, mask in last['mmssm_pruning']['masks'].items():  # the EMA weights in 'state_dict' hold the masks
        assert not last['state_dict'][name][~mask].any(), name
