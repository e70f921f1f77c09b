"""The seg / det configs' backbone checkpoint: settable from a child config or --cfg-options, loaded by
tools/train.py, and the retired top-level ``vim_checkpoint`` (which a child config could set without effect) is
refused."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmssm.models import Vim
from mmssm.utils.launch import check_cfg_options, load_config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_SEG = osp.join(ROOT, 'tests', 'data', 'configs', 'tiny_seg_train.py')
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
# the zoh config, two of its children (all method configs inherit it alike), a grandchild, and the det configs
TASK_CONFIGS = ['configs/seg/upernet_vim_zoh_ade20k.py', 'configs/seg/upernet_vim_bilinear_ade20k.py',
                'configs/seg/upernet_vim_rk4_ade20k.py', 'configs/seg/upernet_vim_bilinear_demo.py',
                'configs/det/mask-rcnn_vim-t_fpn_1x_coco.py', 'configs/det/mask-rcnn_vim-t_fpn_demo.py']
# the backbone of tiny_seg_train.py
TINY_BACKBONE = dict(arch='test', img_size=(32, 32), patch_size=8, out_type='featmap', out_indices=(0, 0, 1, 1),
                     discretization='bilinear')


@pytest.mark.parametrize('config', TASK_CONFIGS)
def test_task_configs_have_a_settable_backbone_checkpoint(config):
    pytest.importorskip('mmdet' if '/det/' in config else 'mmseg')
    cfg = load_config(osp.join(ROOT, config))
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=None)
    assert 'vim_checkpoint' not in cfg
    options = {'model.backbone.init_cfg.checkpoint': 'vim.pth'}
    check_cfg_options(cfg, options)  # what load_config does with --cfg-options
    cfg.merge_from_dict(options)
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='vim.pth')


def test_retired_vim_checkpoint_is_refused(tmp_path):
    pytest.importorskip('mmseg')
    config = osp.join(ROOT, 'configs', 'seg', 'upernet_vim_zoh_ade20k.py')
    with pytest.raises(ValueError, match=r'vim_checkpoint is no longer read.*model\.backbone\.init_cfg\.checkpoint'):
        load_config(config, {'vim_checkpoint': 'vim.pth'})
    child = tmp_path / 'child.py'  # as a child config written for the old variable would do it
    child.write_text(f"_base_ = [{config!r}]\nvim_checkpoint = 'vim.pth'\n")
    with pytest.raises(ValueError, match=r'sets vim_checkpoint.*model\.backbone\.init_cfg\.checkpoint'):
        load_config(str(child))


def saved_backbone(path, seed=1):
    """A backbone checkpoint (mmssm layout) with weights no initialization gives."""
    torch.manual_seed(seed)
    model = Vim(**TINY_BACKBONE)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param))
    torch.save({'state_dict': model.state_dict()}, path)
    return model.state_dict()


def child_config(tmp_path, checkpoint):
    path = tmp_path / 'child_with_checkpoint.py'
    path.write_text(f'_base_ = [{TINY_SEG!r}]\n'
                    f'model = dict(backbone=dict(init_cfg=dict(checkpoint={str(checkpoint)!r})))\n')
    return str(path)


@pytest.mark.parametrize('how', ['child_config', 'cfg_options'])
def test_checkpoint_reaches_the_built_backbone(tmp_path, how):
    """In process: the config as tools/train.py reads it, the model as MMSeg builds it, init_weights."""
    pytest.importorskip('mmseg')
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    expected = saved_backbone(tmp_path / 'backbone.pth')
    if how == 'child_config':
        cfg = load_config(child_config(tmp_path, tmp_path / 'backbone.pth'))
    else:
        cfg = load_config(TINY_SEG, {'model.backbone.init_cfg.checkpoint': str(tmp_path / 'backbone.pth')})
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    for key, value in expected.items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def make_seg_data(root):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for folder in ('images/training', 'annotations/training'):
        os.makedirs(osp.join(root, folder))
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            osp.join(root, 'images', 'training', f'{index}.png'))
        Image.fromarray(rng.integers(0, 4, (32, 32), dtype=np.uint8)).save(
            osp.join(root, 'annotations', 'training', f'{index}.png'))


@pytest.fixture(scope='module')
def train_runs(tmp_path_factory):
    """tools/train.py for one iteration at lr 0, three ways at once (each is mostly import time)."""
    pytest.importorskip('mmseg')
    tmp = tmp_path_factory.mktemp('backbone_checkpoint')
    data_root = str(tmp / 'data')
    make_seg_data(data_root)
    expected = saved_backbone(tmp / 'backbone.pth')
    data = f'train_dataloader.dataset.data_root={data_root}'
    commands = {
        'child_config': [child_config(tmp, tmp / 'backbone.pth'), '--cfg-options', data],
        'cfg_options': [TINY_SEG, '--cfg-options', data, f'model.backbone.init_cfg.checkpoint={tmp / "backbone.pth"}'],
        'scratch': [TINY_SEG, '--cfg-options', data],
    }
    processes = {name: subprocess.Popen(
        [sys.executable, 'tools/train.py', args[0], '--work-dir', str(tmp / name), *args[1:]], cwd=ROOT, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name, args in commands.items()}
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        results[name] = (process.returncode, stdout + stderr, tmp / name / 'iter_1.pth')
    return expected, results


@pytest.mark.slow
@pytest.mark.parametrize('how', ['child_config', 'cfg_options', 'scratch'])
def test_train_tool_loads_the_backbone_checkpoint(train_runs, how):
    expected, results = train_runs
    returncode, output, checkpoint = results[how]
    assert returncode == 0, output[-4000:]
    state_dict = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    equal = [torch.equal(state_dict['backbone.' + key], value) for key, value in expected.items()]
    if how == 'scratch':
        assert not any(equal)
        assert 'checkpoint=None: training the backbone from scratch' in output
    else:
        assert all(equal), [key for key, same in zip(expected, equal) if not same]
        assert 'load model from' in output.lower() and 'from scratch' not in output
