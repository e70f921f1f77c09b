"""Every config in configs/ builds through its own task package (with the real config's model, optimizer and
constructor; only the sizes shrunk to a test arch) and takes one training step on CPU."""
import glob
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py')))
TEST_DIMS = 32


def _task(path):
    return {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}[path.split(osp.sep)[1]]


def _shrink(cfg, scope):
    backbone = cfg.model.backbone
    assert backbone.type == 'mmssm.Vim'
    backbone.update(arch='test', drop_path_rate=0.0)
    if scope == 'mmpretrain':
        backbone.update(img_size=32, patch_size=8)
        cfg.model.head.update(in_channels=TEST_DIMS, num_classes=10)
        cfg.data_preprocessor.num_classes = 10
    elif scope == 'mmseg':
        backbone.update(img_size=64, patch_size=8, out_indices=(0, 0, 1, 1))
        cfg.model.data_preprocessor.size = (64, 64)
        cfg.model.neck.in_channels = TEST_DIMS
        cfg.model.decode_head.update(in_channels=[TEST_DIMS] * 4, channels=16, num_classes=5)
        cfg.model.auxiliary_head.update(in_channels=TEST_DIMS, channels=16, num_classes=5)
        cfg.model.test_cfg = dict(mode='whole')
    else:
        backbone.update(img_size=64, patch_size=8, out_indices=(0, 0, 1, 1))
        cfg.model.neck[0].in_channels = TEST_DIMS
        cfg.model.neck[1].update(in_channels=[TEST_DIMS] * 4, out_channels=32)
        for key in ('rpn_head',):
            cfg.model[key].update(in_channels=32, feat_channels=32)
        cfg.model.roi_head.bbox_roi_extractor.out_channels = 32
        cfg.model.roi_head.bbox_head.update(in_channels=32, fc_out_channels=32, num_classes=3)
        cfg.model.roi_head.mask_roi_extractor.out_channels = 32
        cfg.model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32, num_classes=3)


def _batch(scope):
    torch.manual_seed(0)
    if scope == 'mmpretrain':
        from mmpretrain.structures import DataSample
        return dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(2)],
                    data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(2):
            sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
            sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64)))
            samples.append(sample)
        return dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                    data_samples=samples)
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                                             scale_factor=(1.0, 1.0), batch_input_shape=(64, 64)))
        masks = np.zeros((2, 64, 64), dtype=np.uint8)
        masks[0, 8:40, 10:30] = 1
        masks[1, 30:60, 20:62] = 1
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 8., 30., 40.], [20., 30., 62., 60.]]),
                                           labels=torch.tensor([0, 2]), masks=BitmapMasks(masks, 64, 64))
        samples.append(sample)
    return dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)


def test_every_task_folder_has_configs():
    folders = {p.split(osp.sep)[1] for p in CONFIGS}
    assert folders == {'cls', 'seg', 'det'}
    names = {osp.basename(p) for p in CONFIGS}
    for method in ('zoh', 'foh', 'bilinear', 'poly', 'highorder', 'rk4'):
        assert f'upernet_vim_{method}_ade20k.py' in names


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_and_trains_one_step(path):
    scope = _task(path)
    pytest.importorskip(scope)
    cfg = Config.fromfile(osp.join(ROOT, path))
    init_default_scope(scope)
    full_arch = cfg.model.backbone.arch
    assert full_arch in ('tiny', 'small', 'base')
    named = re.fullmatch(r'upernet_vim_([a-z0-9]+)_(ade20k|demo)\.py', osp.basename(path))
    if named:
        assert cfg.model.backbone.discretization == named.group(1)
    _shrink(cfg, scope)
    if scope == 'mmpretrain':  # as the Runner does: the top-level data_preprocessor goes to the model
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    models = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = revert_sync_batchnorm(models.build(cfg.model))
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    if cfg.optim_wrapper.get('constructor') == 'mmssm.LayerDecayOptimWrapperConstructor':
        rates = {g['lr_scale'] for g in optim_wrapper.optimizer.param_groups}
        assert len(rates) == model.backbone.depth + 2  # one rate per layer id
    model.train()
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    losses = model.train_step(_batch(scope), optim_wrapper)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), losses
    changed = [n for n, p in model.backbone.named_parameters() if not torch.equal(p, before[n])]
    assert 'layers.1.mixer.A_log' in changed and 'patch_embed.projection.weight' in changed
