"""Mixed-precision training of MambaVision without NaN: configs/cls/mambavision-tiny_demo.py (the recipe's
classifier: LAMB, gradient clipping, Mixup/CutMix, label smoothing, EMA) trained for 1000 iterations on the generated
demo data by MMEngine's Runner with its AmpOptimWrapper, every loss finite.

- GPU (``-m gpu``): the real MambaVision-T at the demo's 64x64 images, batch 16, in float16 (dynamic loss scaling) and
  in bfloat16.
- CPU (``-m slow``): bfloat16 only (MMEngine's CPU autocast accepts no other dtype), the 'test' arch at 32x32, batch 8;
  AmpOptimWrapper refuses to be built without a GPU, so its device check is patched for the test: it then autocasts
  with torch.autocast('cpu') and its gradient scaler disables itself, as bfloat16 needs none.
"""
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.hooks import Hook

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'cls', 'mambavision-tiny_demo.py')
ITERATIONS = 1000


class LossRecorder(Hook):
    """Keeps the loss of every training iteration, and the grad scale after it where there is a scaler."""

    def __init__(self):
        self.losses, self.scales, self.dtypes = [], [], set()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss']))
        scaler = getattr(runner.optim_wrapper, 'loss_scaler', None)
        if scaler is not None and scaler.is_enabled():
            self.scales.append(float(scaler.get_scale()))


def make_demo_data(root, image_size, num_train):
    result = subprocess.run([sys.executable, 'tools/misc/make_demo_data.py', '--root', str(root), '--tasks', 'cls',
                             '--quiet', '--num-train', str(num_train), '--num-val', '1', '--image-size',
                             str(image_size)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return osp.join(str(root), 'imagenet')


def train_demo(tmp_path, dtype, device, image_size=64, batch_size=16, num_train=100, arch=None):
    """Train the demo config for ITERATIONS iterations in autocast ``dtype``; return the LossRecorder and runner."""
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmengine.runner import Runner
    data_root = make_demo_data(tmp_path / 'data', image_size, num_train)
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.update(batch_size=batch_size, num_workers=2 if device == 'cuda' else 0,
                                persistent_workers=False, sampler=dict(type='InfiniteSampler', shuffle=True))
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.train_dataloader.dataset.pipeline[1].scale = image_size
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    if arch is not None:
        cfg.model.backbone.update(arch=arch, window_size=None)
        cfg.model.head.in_channels = 64  # the 'test' arch's last stage
    cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype=dtype, loss_scale='dynamic')
    # the demo's schedule (a warm-up epoch of 25 iterations, then cosine) over ITERATIONS iterations
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=25),
        dict(type='CosineAnnealingLR', eta_min=5e-6, by_epoch=False, begin=0, end=ITERATIONS),
    ]
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=ITERATIONS, val_interval=10 * ITERATIONS)
    cfg.log_processor = dict(by_epoch=False)
    cfg.default_hooks.update(logger=dict(type='LoggerHook', interval=100),
                             checkpoint=dict(type='CheckpointHook', interval=10 * ITERATIONS, save_last=False))
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    recorder = LossRecorder()
    runner.register_hook(recorder)
    # what autocast makes of a Mamba block's input projection
    mixer = runner.model.backbone.levels[2].blocks[0].mixer
    mixer.in_proj.register_forward_hook(lambda module, args, out: recorder.dtypes.add(out.dtype))
    runner.train()
    return recorder, runner


def check_finite(recorder, runner, dtype):
    assert recorder.dtypes == {getattr(torch, dtype)}  # the mixers ran in autocast
    losses = recorder.losses
    assert len(losses) == ITERATIONS
    bad = [(i, loss) for i, loss in enumerate(losses) if not math.isfinite(loss)]
    assert not bad, f'{len(bad)} non-finite losses, the first at iterations {bad[:5]}'
    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    bad_params = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    assert not bad_params, bad_params[:5]
    # it learns: the mean loss of the last 100 iterations is below that of the first 100 (Mixup/CutMix keep it well
    # above 0)
    first, last = sum(losses[:100]) / 100, sum(losses[-100:]) / 100
    print(f'mean loss over the first 100 iterations {first:.3f}, over the last 100 {last:.3f}')
    assert last < first, (first, last)


@pytest.mark.gpu
@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_mambavision_tiny_trains_1000_iterations_in_amp_on_gpu(tmp_path, dtype):
    if dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        pytest.skip('this GPU has no bfloat16')
    recorder, runner = train_demo(tmp_path, dtype, 'cuda')
    check_finite(recorder, runner, dtype)
    if dtype == 'float16':  # dynamic loss scaling stayed in a sane range (no run of overflows)
        assert recorder.scales and min(recorder.scales) >= 1.0, recorder.scales[-10:]


@pytest.mark.slow
def test_mambavision_trains_1000_iterations_in_bf16_autocast_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr('mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available', lambda: True)
    recorder, runner = train_demo(tmp_path, 'bfloat16', 'cpu', image_size=32, batch_size=8, num_train=8,
                                  arch='test')
    assert not runner.optim_wrapper.loss_scaler.is_enabled()  # bfloat16: no scaler
    check_finite(recorder, runner, 'bfloat16')
