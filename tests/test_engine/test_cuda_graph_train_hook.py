"""CUDAGraphTrainHook's parts that need no GPU: the batch's tensors found and replaced, the optimizer made
capturable, and every configuration a graph cannot serve refused with its fix. The training run itself is
tests/test_tools/test_train.py's GPU test."""
import types

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from torch import nn

from mmssm.engine.hooks.cuda_graph_train import CUDAGraphTrainHook, fill_slots, make_capturable, tensor_slots

mmpretrain = pytest.importorskip('mmpretrain')


def test_every_tensor_of_a_batch_is_found_and_replaced():
    from mmengine.structures import PixelData
    from mmpretrain.structures import DataSample
    from mmseg.structures import SegDataSample
    samples = [DataSample().set_gt_label(i).set_gt_score(torch.rand(3)) for i in range(2)]
    seg = SegDataSample()
    seg.gt_sem_seg = PixelData(data=torch.zeros(1, 4, 4, dtype=torch.long))
    seg.set_metainfo(dict(img_shape=(4, 4)))
    batch = dict(inputs=torch.rand(2, 3, 4, 4), data_samples=samples, extra=[seg])
    slots = tensor_slots(batch)
    found = [t for _, _, t in slots]
    assert len(found) == 6  # inputs, two labels, two scores, the segmentation map
    assert any(t is batch['inputs'] for t in found) and any(t is seg.gt_sem_seg.data for t in found)
    assert tensor_slots(dict(batch)) and [k for _, k, _ in tensor_slots(batch)] == [k for _, k, _ in slots]
    new = [t.clone() + 1 for t in found]
    fill_slots(slots, new)
    assert batch['inputs'] is new[[i for i, t in enumerate(found) if t.dim() == 4][0]]
    assert all(any(s.gt_score is t for t in new) and any(s.gt_label is t for t in new) for s in samples)
    assert any(seg.gt_sem_seg.data is t for t in new)


def test_make_capturable():
    model = nn.Linear(3, 2)
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    adamw.step()  # a state with its step count, as after a resume
    assert make_capturable(adamw)
    assert adamw.defaults['capturable'] and all(g['capturable'] for g in adamw.param_groups)
    assert not make_capturable(adamw)  # already
    assert not make_capturable(torch.optim.SGD(model.parameters(), lr=0.1))  # no such option


def runner_with(optim_wrapper, model=None, schedulers=None):
    model = model or nn.Linear(3, 2)
    logger = types.SimpleNamespace(info=lambda message: None)
    return types.SimpleNamespace(model=model, optim_wrapper=optim_wrapper, logger=logger, param_schedulers=schedulers)


@pytest.mark.parametrize('optimizer, scheduler, match', [
    ('SGD', 'CosineAnnealingLR', 'SGD has no capturable option'),
    ('AdamW', 'CosineAnnealingMomentum', "bakes 'momentum' in"),
    ('AdamW', 'CosineAnnealingLR', None),  # followed
])
def test_schedules_a_graph_cannot_follow_are_refused(optimizer, scheduler, match):
    from mmengine.optim import scheduler as schedulers
    model = nn.Linear(3, 2)
    wrapper = OptimWrapper(getattr(torch.optim, optimizer)(model.parameters(), lr=0.1, betas=(0.9, 0.99))
                           if optimizer == 'AdamW' else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    runner = runner_with(wrapper, model, {'': [getattr(schedulers, scheduler)(wrapper, T_max=10)]})
    if match is None:
        with pytest.raises(RuntimeError, match='CUDA GPU'):  # past the schedule check, to the CPU refusal
            CUDAGraphTrainHook().before_train(runner)
    else:
        with pytest.raises(ValueError, match=match):
            CUDAGraphTrainHook().before_train(runner)


@pytest.mark.parametrize('make_wrapper, match', [
    (lambda opt: type('AmpLike', (OptimWrapper, ), {})(opt), "AmpLike.*autocast='bfloat16'"),
    (lambda opt: OptimWrapper(opt, accumulative_counts=2), 'accumulative_counts=1'),
])
def test_refused_configurations_name_the_fix(make_wrapper, match):
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=match):
        CUDAGraphTrainHook().before_train(runner_with(make_wrapper(torch.optim.AdamW(model.parameters())), model))


def test_cpu_model_and_bad_autocast_are_refused():
    model = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match='CUDA GPU'):
        CUDAGraphTrainHook().before_train(runner_with(OptimWrapper(torch.optim.AdamW(model.parameters())), model))
    assert 'train_step' not in model.__dict__
    with pytest.raises(ValueError, match='float16'):
        CUDAGraphTrainHook(autocast='float16')


def test_train_py_refuses_cuda_graph_without_a_gpu(monkeypatch):
    import importlib.util
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    spec = importlib.util.spec_from_file_location('train_tool', osp.join(root, 'tools', 'train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    config = osp.join(root, 'tests', 'data', 'configs', 'tiny_cls_train.py')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ValueError, match='--cuda-graph needs a CUDA GPU'):
        train.build_cfg(train.parse_args([config, '--cuda-graph']))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    with pytest.raises(ValueError, match='one process'):
        train.build_cfg(train.parse_args([config, '--cuda-graph', '--launcher', 'pytorch']))
    cfg = train.build_cfg(train.parse_args([config, '--cuda-graph', '--amp']))
    assert dict(type='mmssm.CUDAGraphTrainHook', autocast='bfloat16') in cfg.custom_hooks
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'  # not AmpOptimWrapper


class Tiny(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.fc(inputs)
        return dict(loss=nn.functional.cross_entropy(out, data_samples)) if mode == 'loss' else out


@pytest.mark.parametrize('clip_grad', [None, dict(max_norm=0.05), dict(type='value', clip_value=0.01)])
def test_the_hooks_step_is_mmengines(clip_grad):
    """The step the hook captures (run eagerly here) updates the weights as OptimWrapper.update_params does, with
    or without clip_grad; the norm that MMEngine would log with a host sync comes out with the log variables."""
    from mmengine.logging import MessageHub
    torch.manual_seed(0)
    model, twin = Tiny(), Tiny()
    twin.load_state_dict(model.state_dict())
    copy = (lambda: dict(clip_grad)) if clip_grad else (lambda: None)  # (OptimWrapper pops 'type' from it)
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=0.1), clip_grad=copy())
    twin_wrapper = OptimWrapper(torch.optim.AdamW(twin.parameters(), lr=0.1), clip_grad=copy())
    hook = CUDAGraphTrainHook()
    hook._model, hook._optim_wrapper = model, wrapper
    hub = MessageHub.get_current_instance()
    for _ in range(3):
        data = dict(inputs=torch.randn(8, 4), data_samples=torch.randint(0, 3, (8,)))
        hook._data, hook._slots = data, tensor_slots(data)
        log_vars = hook._run(*(t.clone() for _, _, t in hook._slots))
        twin_loss, twin_vars = twin.parse_losses(twin._run_forward(data, mode='loss'))
        twin_wrapper.update_params(twin_loss)
        torch.testing.assert_close(log_vars['loss'], twin_vars['loss'], rtol=0, atol=0)
        if clip_grad and 'max_norm' in clip_grad:
            assert log_vars['grad_norm'].item() == pytest.approx(hub.get_scalar('train/grad_norm').current())
            assert log_vars['grad_norm'].item() > clip_grad['max_norm']  # (so the clip did act)
        else:
            assert 'grad_norm' not in log_vars
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert all(p.grad is None for p in model.parameters())
