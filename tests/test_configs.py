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
    if backbone.type == 'mmssm.MambaVision':
        return _shrink_mamba_vision(cfg, scope)
    plain_mamba = backbone.type in ('mmssm.PlainMamba', 'mmssm.ToPPlainMamba')
    assert plain_mamba or backbone.type in ('mmssm.Vim', 'mmssm.ToPVim')
    backbone.update(arch='test', drop_path_rate=0.0)
    if backbone.type in ('mmssm.ToPVim', 'mmssm.ToPPlainMamba'):  # the test arch's 2 blocks: prune after the first
        backbone.token_pruning.update(layers=(0,), keep_ratio=0.5)
    if plain_mamba:  # stride 16: a 64x64 input gives a 4x4 grid; 4 layers, one map each, for the dense heads
        backbone.update(img_size=32 if scope == 'mmpretrain' else 64)
        if scope != 'mmpretrain':
            backbone.update(arch=dict(embed_dims=TEST_DIMS, depth=4, d_state=4, conv_size=3, layers_with_dwconv=(0, )),
                            out_indices=(0, 1, 2, 3))
    if scope == 'mmpretrain':
        if not plain_mamba:
            backbone.update(img_size=32, patch_size=8)
        cfg.model.head.update(in_channels=TEST_DIMS, num_classes=10)
        cfg.data_preprocessor.num_classes = 10
    elif scope == 'mmseg':
        if not plain_mamba:
            backbone.update(img_size=64, patch_size=8, out_indices=(0, 0, 1, 1))
            cfg.model.neck.in_channels = TEST_DIMS
        cfg.model.data_preprocessor.size = (64, 64)
        cfg.model.decode_head.update(in_channels=[TEST_DIMS] * 4, channels=16, num_classes=5)
        cfg.model.auxiliary_head.update(in_channels=TEST_DIMS, channels=16, num_classes=5)
        cfg.model.test_cfg = dict(mode='whole')
    else:
        if not plain_mamba:
            backbone.update(img_size=64, patch_size=8, out_indices=(0, 0, 1, 1))
        cfg.model.neck[0].in_channels = TEST_DIMS
        cfg.model.neck[1].update(in_channels=[TEST_DIMS] * 4, out_channels=32)
        for key in ('rpn_head',):
            cfg.model[key].update(in_channels=32, feat_channels=32)
        cfg.model.roi_head.bbox_roi_extractor.out_channels = 32
        cfg.model.roi_head.bbox_head.update(in_channels=32, conv_out_channels=32, fc_out_channels=32, num_classes=3)
        cfg.model.roi_head.mask_roi_extractor.out_channels = 32
        cfg.model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32, num_classes=3)


def _shrink_mamba_vision(cfg, scope):
    # the 'test' arch's channels 8, 16, 32, 64 and its own windows (the configs' windows are checked at full size in
    # tests/test_tools/test_mambavision_configs.py)
    cfg.model.backbone.update(arch='test', drop_path_rate=0.0, window_size=None)
    channels = [8, 16, 32, 64]
    if scope == 'mmpretrain':
        cfg.model.head.update(in_channels=channels[3], num_classes=10)
        cfg.data_preprocessor.num_classes = 10
    elif scope == 'mmseg':
        cfg.model.data_preprocessor.size = (64, 64)
        cfg.model.decode_head.update(in_channels=channels, channels=16, num_classes=5)
        cfg.model.auxiliary_head.update(in_channels=channels[2], channels=16, num_classes=5)
        cfg.model.test_cfg = dict(mode='whole')
    else:
        cfg.model.neck.update(in_channels=channels, out_channels=32)
        cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
        roi_head = cfg.model.roi_head
        roi_head.bbox_roi_extractor.out_channels = 32
        for head in roi_head.bbox_head if isinstance(roi_head.bbox_head, list) else [roi_head.bbox_head]:
            head.update(in_channels=32, conv_out_channels=32, fc_out_channels=32, num_classes=3)
        roi_head.mask_roi_extractor.out_channels = 32
        roi_head.mask_head.update(in_channels=32, conv_out_channels=32, num_classes=3)


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
    small = path.endswith(('_digits_demo.py', 'plainmamba-l1_demo.py', 'plainmamba-l1_fpn_demo.py'))  # arch dicts
    assert full_arch in ('tiny', 'small', 'base', 'l1', 'l2', 'l3') or small
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
    if cfg.model.backbone.type == 'mmssm.MambaVision':
        assert 'levels.2.blocks.0.mixer.A_log' in changed and 'patch_embed.conv_down.0.weight' in changed
        return
    assert 'layers.1.mixer.A_log' in changed and 'patch_embed.projection.weight' in changed


def test_vimseg_config_is_hustvl_vims_setting():
    """configs/seg/upernet_vim-t_vimseg_ade20k.py at full size: Vim-T without class token whose maps are the mixer
    outputs of blocks 5/11/17/23, the pyramid at strides 4-32, and the parameter groups of hustvl/Vim's run."""
    pytest.importorskip('mmseg')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'seg', 'upernet_vim-t_vimseg_ade20k.py'))
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    backbone = model.backbone
    assert (backbone.embed_dims, backbone.depth, backbone.cls_token_position, backbone.feature_source) == \
        (192, 24, 'none', 'mixer')
    assert backbone.train_grid == (32, 32) and backbone.pos_embed.shape == (1, 1024, 192)
    assert backbone.out_indices == [5, 11, 17, 23] and not backbone.layers[0].residual_in_fp32
    assert backbone.layers[23].drop_path.drop_prob == pytest.approx(0.1 * 22 / 23)
    assert model.auxiliary_head.channels == 256 and model.decode_head.channels == 192
    model.eval()
    captured = []
    for index in backbone.out_indices:
        backbone.layers[index].mixer.register_forward_hook(lambda module, args, output: captured.append(output))
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 64))  # a 4x4 grid; the 32x32 position embedding is resized
        pyramid = model.neck(maps)
    assert [tuple(m.shape) for m in maps] == [(1, 192, 4, 4)] * 4
    for out, mixer_out in zip(maps, captured):
        assert torch.equal(out, mixer_out.transpose(1, 2).reshape(1, 192, 4, 4))
    assert [tuple(m.shape) for m in pyramid] == [(1, 192, 16, 16), (1, 192, 8, 8), (1, 192, 4, 4), (1, 192, 2, 2)]

    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(g['params'][0])]: g for g in optim_wrapper.optimizer.param_groups}
    low = 2e-4 * 0.92 ** 25
    expected = {  # name: (lr, weight decay), as hustvl/Vim's LayerDecayOptimizerConstructor builds them
        'backbone.patch_embed.projection.weight': (low, 0.1), 'backbone.patch_embed.projection.bias': (low, 0.0),
        'backbone.pos_embed': (low, 0.1), 'backbone.layers.0.mixer.A_log': (2e-4, 0.1),
        'backbone.layers.0.mixer.D': (2e-4, 0.0), 'backbone.layers.23.mixer.in_proj.weight': (2e-4, 0.1),
        'backbone.layers.12.norm.weight': (2e-4, 0.0), 'backbone.layers.3.mixer.conv1d.weight': (2e-4, 0.1),
        'backbone.layers.3.mixer.conv1d.bias': (2e-4, 0.0), 'decode_head.conv_seg.weight': (2e-4, 0.1),
        'neck.resamplers.0.1.weight': (2e-4, 0.0)}
    for name, (lr, decay) in expected.items():
        assert groups[name]['lr'] == pytest.approx(lr) and groups[name]['weight_decay'] == decay, name
    assert cfg.find_unused_parameters and cfg.train_cfg.max_iters == 60000 and cfg.train_dataloader.batch_size == 8
