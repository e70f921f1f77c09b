"""tools/train.py, tools/test.py and tools/dist_train.sh end to end on CPU, with a tiny copy of the real Vim-T
classification config: resume continues a run exactly, checkpoints load with weights_only=True, two processes
with half the batch each train the same model as one, and bad data paths / config keys stop with a message."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'tests', 'data', 'configs', 'tiny_cls_train.py')
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')

pytest.importorskip('mmpretrain')


def run(args, **kwargs):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=600, **kwargs)
    return result


def train(work_dir, data_root, *extra, config=CONFIG):
    result = run(['tools/train.py', config, '--work-dir', str(work_dir), '--cfg-options',
                  f'train_dataloader.dataset.data_root={data_root}',
                  f'test_dataloader.dataset.data_root={data_root}', *extra])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def losses(work_dir):
    found = {}
    for path in sorted(glob_scalars(work_dir)):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'loss' in record:
                    found[record['iter']] = record['loss']
    return found


def glob_scalars(work_dir):
    for dirpath, _, files in os.walk(work_dir):
        for name in files:
            if name == 'scalars.json':
                yield osp.join(dirpath, name)


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, data_root):
    work_dir = tmp_path_factory.mktemp('full')
    train(work_dir, data_root)
    return work_dir


def test_resume_continues_to_the_same_losses(full_run, data_root, tmp_path):
    reference = losses(full_run)
    assert sorted(reference) == list(range(1, 13))  # 4 epochs x 3 iterations
    # a run "killed" after epoch 2: its work dir holds what it had written by then
    shutil.copy(osp.join(full_run, 'epoch_2.pth'), tmp_path / 'epoch_2.pth')
    with open(tmp_path / 'last_checkpoint', 'w') as f:
        f.write(str(tmp_path / 'epoch_2.pth'))
    result = train(tmp_path, data_root, '--resume')
    assert 'resumed' in (result.stdout + result.stderr).lower() or 'resume' in (result.stdout + result.stderr)
    resumed = losses(tmp_path)
    assert sorted(resumed) == list(range(7, 13))
    for step in resumed:
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_checkpoints_load_with_weights_only(full_run):
    checkpoint = torch.load(osp.join(full_run, 'epoch_4.pth'), map_location='cpu', weights_only=True)
    assert {'state_dict', 'optimizer', 'message_hub', 'meta'} <= set(checkpoint)
    assert checkpoint['meta']['epoch'] == 4


def test_test_tool_evaluates_the_checkpoint(full_run, data_root, tmp_path):
    result = run(['tools/test.py', CONFIG, osp.join(full_run, 'epoch_4.pth'), '--work-dir', str(tmp_path),
                  '--cfg-options', f'test_dataloader.dataset.data_root={data_root}',
                  f'train_dataloader.dataset.data_root={data_root}'])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout + result.stderr


def test_two_processes_train_the_same_model_as_one(data_root, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    options = [f'train_dataloader.dataset.data_root={data_root}', 'train_cfg.max_epochs=2']
    train(one, data_root, *options[1:])
    result = subprocess.run(
        ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', str(two), '--cfg-options', *options,
         'train_dataloader.batch_size=2', f'test_dataloader.dataset.data_root={data_root}'],
        cwd=ROOT, env=dict(ENV, PYTHON=sys.executable, PORT='29517'), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    single = torch.load(one / 'epoch_2.pth', map_location='cpu', weights_only=True)['state_dict']
    double = torch.load(two / 'epoch_2.pth', map_location='cpu', weights_only=True)['state_dict']
    assert single.keys() == double.keys()
    moved = 0
    for key in single:
        # 6 AdamW steps on the same global batches: equal up to float32 summation order
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
        moved += 1
    assert moved > 10


def test_missing_data_stops_at_once(tmp_path):
    result = run(['tools/train.py', osp.join('configs', 'seg', 'upernet_vim_bilinear_ade20k.py'), '--work-dir',
                  str(tmp_path), '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path}/nowhere'])
    assert result.returncode != 0
    assert f'{tmp_path}/nowhere' in result.stderr and 'make demo' in result.stderr
    assert 'Traceback' not in result.stderr


def test_unknown_config_key_is_named(tmp_path):
    result = run(['tools/train.py', osp.join('configs', 'seg', 'upernet_vim_bilinear_ade20k.py'), '--work-dir',
                  str(tmp_path), '--cfg-options', 'model.backbone.discretisation=rk4'])
    assert result.returncode != 0
    assert "no key 'model.backbone.discretisation'" in result.stderr
    assert "'model.backbone.discretization'" in result.stderr


def test_amp_without_gpu_is_refused(tmp_path, data_root):
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    result = run(['tools/train.py', CONFIG, '--amp', '--work-dir', str(tmp_path), '--cfg-options',
                  f'train_dataloader.dataset.data_root={data_root}'])
    assert result.returncode != 0 and '--amp needs a CUDA GPU' in result.stderr


@pytest.mark.gpu
def test_cuda_graph_training_follows_the_eager_run(data_root, tmp_path):
    """tools/train.py --cuda-graph (mmssm.CUDAGraphTrainHook): each iteration's loss equals the eager run's,
    through the cosine schedule's lr change at the epoch; with --amp, bf16 autocast in the graph. The config's
    LabelSmoothLoss checks integer labels with .item(), which a graph cannot hold: that run stops and says so."""
    options, config = ['train_cfg.max_epochs=2'], CONFIG.replace('.py', '_ce.py')
    train(tmp_path / 'eager', data_root, *options, config=config)
    result = train(tmp_path / 'graph', data_root, *options, '--cuda-graph', config=config)
    assert 'training steps replayed from CUDA graphs (autocast off)' in result.stdout + result.stderr
    reference, graphed = losses(tmp_path / 'eager'), losses(tmp_path / 'graph')
    assert sorted(graphed) == sorted(reference) == list(range(1, 7))
    for step in reference:
        assert graphed[step] == pytest.approx(reference[step], rel=1e-3, abs=1e-5), step
    result = train(tmp_path / 'graph_amp', data_root, *options, '--cuda-graph', '--amp', config=config)
    assert 'autocast bfloat16' in result.stdout + result.stderr
    amp = losses(tmp_path / 'graph_amp')
    assert sorted(amp) == list(range(1, 7)) and all(abs(v - reference[k]) < 0.1 * reference[k] + 0.05
                                                     for k, v in amp.items())
    failed = run(['tools/train.py', CONFIG, '--work-dir', str(tmp_path / 'smooth'), '--cuda-graph', '--cfg-options',
                  f'train_dataloader.dataset.data_root={data_root}', 'train_cfg.max_epochs=1'])
    assert failed.returncode != 0 and 'could not be captured' in failed.stderr and 'LabelSmoothLoss' in failed.stderr


def scalars(work_dir, key):
    found = {}
    for path in glob_scalars(work_dir):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if key in record:
                    found[record['iter']] = record[key]
    return found


@pytest.mark.gpu
def test_cuda_graph_training_with_clip_grad(data_root, tmp_path):
    """--cuda-graph with optim_wrapper.clip_grad: the losses and the logged gradient norms equal the eager run's."""
    config = CONFIG.replace('.py', '_ce_clip.py')
    train(tmp_path / 'eager', data_root, 'train_cfg.max_epochs=2', config=config)
    train(tmp_path / 'graph', data_root, 'train_cfg.max_epochs=2', '--cuda-graph', config=config)
    for key in ('loss', 'grad_norm'):
        reference, graphed = scalars(tmp_path / 'eager', key), scalars(tmp_path / 'graph', key)
        assert sorted(graphed) == sorted(reference) == list(range(1, 7)), key
        for step in reference:
            assert graphed[step] == pytest.approx(reference[step], rel=1e-3, abs=1e-5), (key, step)
    assert max(scalars(tmp_path / 'eager', 'grad_norm').values()) > 0.5  # (the clip acted)
