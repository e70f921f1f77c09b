"""The classification and detection demo configs train and evaluate on their generated demo data (a few
iterations here) through tools/train.py and tools/test.py."""
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ENV = dict(os.environ, OMP_NUM_THREADS='2', PYTHONWARNINGS='ignore')


def run(args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize('task, config, root_key, root_sub, metric', [
    ('cls', 'configs/cls/vim-tiny-p16_demo.py', 'data_root', 'imagenet', 'accuracy/top1'),
    ('det', 'configs/det/mask-rcnn_vim-t_fpn_demo.py', 'data_root', 'coco/', 'coco/segm_mAP'),
])
def test_demo_config_trains_and_tests(tmp_path, task, config, root_key, root_sub, metric):
    pytest.importorskip({'cls': 'mmpretrain', 'det': 'mmdet'}[task])
    data = tmp_path / 'data'
    counts = ['--num-train', '8', '--num-val', '4'] if task == 'det' else ['--num-train', '4', '--num-val', '2']
    run(['tools/misc/make_demo_data.py', '--root', str(data), '--tasks', task, '--quiet', *counts])
    root = osp.join(str(data), root_sub)
    options = [f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
               f'test_dataloader.dataset.data_root={root}', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2']
    if task == 'det':
        options.append(f'val_evaluator.ann_file={root}annotations/instances_val2017.json')
        options.append(f'test_evaluator.ann_file={root}annotations/instances_val2017.json')
    work = tmp_path / 'work'
    run(['tools/train.py', config, '--work-dir', str(work), '--cfg-options', *options])
    assert (work / 'epoch_2.pth').is_file()
    output = run(['tools/test.py', config, str(work / 'epoch_2.pth'), '--work-dir', str(work), '--cfg-options',
                  *options])
    assert metric in output
