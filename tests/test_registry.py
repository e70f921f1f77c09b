"""mmssm types resolve from configs of each task package, through ``custom_imports`` and ``type='mmssm.X'``,
with the task package's own registry and builder: the model is built and takes one training step."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope

from mmssm.models.layers import RMSNorm
from mmssm.models.necks import PlainPyramidNeck

CONFIG_DIR = osp.join(osp.dirname(__file__), 'data', 'configs')


def build_from_config(name, scope):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))  # runs custom_imports
    init_default_scope(scope)
    registry = {
        'mmpretrain': 'mmpretrain.registry',
        'mmseg': 'mmseg.registry',
        'mmdet': 'mmdet.registry',
    }[scope]
    models = __import__(registry, fromlist=['MODELS']).MODELS
    torch.manual_seed(0)
    model = models.build(cfg.model)
    model.init_weights()
    return model


def train_step_loss(model, data):
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    model.train()
    losses = model.train_step(data, optim_wrapper)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), losses
    return losses


def test_mmssm_registry_is_a_child_of_mmengine():
    from mmengine.registry import MODELS as ROOT

    from mmssm.registry import HOOKS, MODELS
    assert MODELS.parent is ROOT and MODELS.scope == 'mmssm'
    assert HOOKS.scope == 'mmssm'
    assert ROOT.get('mmssm.PlainPyramidNeck') is PlainPyramidNeck


def test_mmpretrain_config_reaches_mmssm():
    pytest.importorskip('mmpretrain')
    from mmpretrain.structures import DataSample
    model = build_from_config('registry_cls.py', 'mmpretrain')
    norms = [m for m in model.backbone.modules() if isinstance(m, RMSNorm)]
    assert len(norms) == 5  # two per layer, one final
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    losses = train_step_loss(model, data)
    assert 'loss' in losses


def test_mmseg_config_reaches_mmssm():
    pytest.importorskip('mmseg')
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    model = build_from_config('registry_seg.py', 'mmseg')
    assert isinstance(model.neck, PlainPyramidNeck)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 64, 64)))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    losses = train_step_loss(model, data)
    assert 'decode.loss_ce' in losses
    model.eval()
    with torch.no_grad():
        preds = model.val_step(data)
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_mmdet_config_reaches_mmssm():
    pytest.importorskip('mmdet')
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    model = build_from_config('registry_det.py', 'mmdet')
    assert isinstance(model.neck[0], PlainPyramidNeck)
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                                             scale_factor=(1.0, 1.0), batch_input_shape=(64, 64)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[4.0, 6.0, 40.0, 50.0]]),
                                           labels=torch.tensor([1]))
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    losses = train_step_loss(model, data)
    assert 'loss_cls' in losses and 'loss_bbox' in losses
