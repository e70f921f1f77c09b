"""The MambaVision configs: each real config builds its full-size model with the official settings (windows, output
norms, drop path, head widths); a backbone checkpoint set with --cfg-options loads; and the classification,
segmentation and detection demo configs train and test on their generated demo data through tools/train.py and
tools/test.py (a couple of iterations here)."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ENV = dict(os.environ, OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore')
SCOPES = {'cls': 'mmpretrain', 'seg': 'mmseg', 'det': 'mmdet'}

# config: (arch, window sizes, drop path): the official ones (see each config's header)
REAL_CONFIGS = {
    'configs/cls/mambavision-tiny_32xb128_in1k.py': ('tiny', [8, 8, 14, 7], 0.2),
    'configs/cls/mambavision-small_32xb128_in1k.py': ('small', [8, 8, 14, 7], 0.2),
    'configs/cls/mambavision-base_32xb128_in1k.py': ('base', [8, 8, 14, 7], 0.3),
    'configs/seg/upernet_mambavision-t_16xb1_ade20k.py': ('tiny', [8, 8, 64, 32], 0.2),
    'configs/seg/upernet_mambavision-s_8xb2_ade20k.py': ('small', [8, 8, 160, 56], 0.2),
    'configs/seg/upernet_mambavision-b_16xb1_ade20k.py': ('base', [8, 8, 64, 32], 0.2),
    'configs/det/cascade-mask-rcnn_mambavision-t_fpn_3x_coco.py': ('tiny', [8, 8, 112, 56], 0.2),
    'configs/det/cascade-mask-rcnn_mambavision-s_fpn_3x_coco.py': ('small', [8, 8, 112, 56], 0.2),
    'configs/det/cascade-mask-rcnn_mambavision-b_fpn_3x_coco.py': ('base', [8, 8, 112, 56], 0.2),
}
EMBED_DIMS = dict(tiny=80, small=96, base=128)


def build(cfg, task):
    init_default_scope(SCOPES[task])
    if task == 'cls':  # as the Runner does: the top-level data_preprocessor goes to the model
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    models = __import__(f'{SCOPES[task]}.registry', fromlist=['MODELS']).MODELS
    return revert_sync_batchnorm(models.build(cfg.model))


def test_every_mambavision_config_is_listed_here():
    found = {osp.join('configs', folder, name) for folder in SCOPES for name in os.listdir(osp.join(ROOT, 'configs',
                                                                                                     folder))
             if 'mambavision' in name and not name.endswith('_demo.py')}
    assert found == set(REAL_CONFIGS)


@pytest.mark.parametrize('path', sorted(REAL_CONFIGS))
def test_real_config_builds_the_official_model(path):
    task = path.split('/')[1]
    pytest.importorskip(SCOPES[task])
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    from mmssm.models.layers import LayerNorm2d
    arch, windows, drop_path = REAL_CONFIGS[path]
    cfg = Config.fromfile(osp.join(ROOT, path))
    model = build(cfg, task)
    backbone = model.backbone
    channels = [EMBED_DIMS[arch] * 2 ** i for i in range(4)]
    assert backbone.num_features == channels
    assert backbone.arch_settings['window_size'] == windows
    assert backbone.arch_settings['layer_scale'] == (1e-5 if arch == 'base' else None)
    last_block = backbone.levels[3].blocks[-1]
    assert last_block.drop_path.drop_prob == pytest.approx(drop_path)
    if task == 'cls':
        assert backbone.out_indices == [3] and isinstance(backbone.norm3, torch.nn.BatchNorm2d)
        assert model.head.fc.in_features == channels[3]
        assert type(model.neck).__name__ == 'GlobalAveragePooling'
        assert cfg.optim_wrapper.optimizer.type == 'Lamb' and cfg.optim_wrapper.clip_grad.max_norm == 5.0
        assert cfg.custom_hooks[0].type == 'EMAHook' and cfg.custom_hooks[0].momentum == pytest.approx(2e-4)
        assert cfg.train_cfg.max_epochs == 320
    else:
        assert backbone.out_indices == [0, 1, 2, 3]
        assert all(isinstance(getattr(backbone, f'norm{i}'), LayerNorm2d) for i in range(4))
        assert backbone.init_cfg == dict(type='Pretrained', checkpoint=None)
        if task == 'seg':
            assert model.decode_head.in_channels == channels and model.auxiliary_head.in_channels == channels[2]
        else:
            assert model.neck.in_channels == channels and len(model.roi_head.bbox_head) == 3
            assert cfg.train_cfg.max_epochs == 36
    # the optimizer's parameter groups build (no decay on 'norm' parameters for the dense configs, timm's rule for
    # the classifiers)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    mixer = backbone.levels[2].blocks[0]
    assert decay[id(mixer.norm1.weight)] == 0.0
    assert decay[id(mixer.mixer.in_proj.weight)] == cfg.optim_wrapper.optimizer.weight_decay
    if task == 'cls':
        assert decay[id(mixer.mixer.D)] == 0.0 and decay[id(mixer.mixer.dt_proj.bias)] == 0.0
        assert decay[id(mixer.mixer.A_log)] == cfg.optim_wrapper.optimizer.weight_decay


@pytest.mark.parametrize('path', ['configs/seg/upernet_mambavision-t_16xb1_ade20k.py',
                                  'configs/det/cascade-mask-rcnn_mambavision-t_fpn_3x_coco.py'])
def test_backbone_checkpoint_from_cfg_options_or_a_child_config(path, tmp_path):
    """`--cfg-options model.backbone.init_cfg.checkpoint=PATH` (the key exists: checkpoint=None in the config) or a
    child config that sets only the path loads the backbone; without either it keeps its initialization."""
    task = path.split('/')[1]
    pytest.importorskip(SCOPES[task])
    from mmssm.models import MambaVision
    from mmssm.utils.launch import load_config
    torch.manual_seed(1)
    source = MambaVision('test', out_indices=(0, 1, 2, 3), out_norm='ln2d')
    with torch.no_grad():
        for param in source.parameters():
            param.add_(1.0)
    checkpoint = tmp_path / 'backbone.pth'
    torch.save(dict(state_dict=source.state_dict()), checkpoint)
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = '{osp.join(ROOT, path)}'\n"
                     f"model = dict(backbone=dict(init_cfg=dict(checkpoint='{checkpoint}')))\n")
    shrink = {'model.backbone.arch': 'test', 'model.backbone.window_size': None}
    for config, options, loaded in ((osp.join(ROOT, path), shrink, False),
                                    (osp.join(ROOT, path), dict(shrink, **{'model.backbone.init_cfg.checkpoint':
                                                                           str(checkpoint)}), True),
                                    (str(child), shrink, True)):
        cfg = load_config(config, options)
        backbone = build(cfg, task).backbone
        backbone.init_weights()
        same = [torch.equal(p, source.state_dict()[n]) for n, p in backbone.state_dict().items()]
        assert all(same) if loaded else not any(same[:3]), (config, options)


# ---- the demo configs, end to end ------------------------------------------------------------------------------


def run(args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('task, config, root_sub, metric', [
    ('cls', 'configs/cls/mambavision-tiny_demo.py', 'imagenet', 'accuracy/top1'),
    ('seg', 'configs/seg/upernet_mambavision-t_demo.py', 'ade/ADEChallengeData2016', 'mIoU'),
    ('det', 'configs/det/cascade-mask-rcnn_mambavision-t_fpn_demo.py', 'coco/', 'coco/segm_mAP'),
])
def test_mambavision_demo_config_trains_and_tests(tmp_path, task, config, root_sub, metric):
    pytest.importorskip(SCOPES[task])
    data = tmp_path / 'data'
    counts = {'cls': ['--num-train', '4', '--num-val', '2'], 'seg': ['--num-train', '4', '--num-val', '2'],
              'det': ['--num-train', '8', '--num-val', '4']}[task]
    run(['tools/misc/make_demo_data.py', '--root', str(data), '--tasks', task, '--quiet', *counts])
    root = osp.join(str(data), root_sub)
    options = [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
               f'test_dataloader.dataset.data_root={root}']
    if task == 'seg':
        options += ['train_cfg.max_iters=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2']
        checkpoint = 'iter_2.pth'
    else:
        options += ['train_cfg.max_epochs=2', 'train_cfg.val_interval=2']
        checkpoint = 'epoch_2.pth'
    if task == 'det':
        options += [f'val_evaluator.ann_file={root}annotations/instances_val2017.json',
                    f'test_evaluator.ann_file={root}annotations/instances_val2017.json']
    work = tmp_path / 'work'
    run(['tools/train.py', config, '--work-dir', str(work), '--cfg-options', *options])
    assert (work / checkpoint).is_file()
    output = run(['tools/test.py', config, str(work / checkpoint), '--work-dir', str(work), '--cfg-options',
                  *options])
    assert metric in output
