"""The main job on generated demo data, start to finish, on a CPU in minutes: what `make demo` runs.

1. generate the demo dataset (ADE20K layout) into data/demo, deterministic from --seed;
2. train configs/seg/upernet_vim_bilinear_demo.py (the real Vim-bilinear UperNet config with the demo data and a
   short schedule) with tools/train.py;
3. evaluate the last checkpoint with tools/test.py, print the mIoU, and write pictures of the predictions next to
   the ground truth.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join('configs', 'seg', 'upernet_vim_bilinear_demo.py')


def step(title, command):
    print(f'\n==> {title}\n    {" ".join(command)}', flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    print(f'    done in {seconds:.0f} s', flush=True)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'demo'))
    parser.add_argument('--data-root', default=osp.join('data', 'demo'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--max-iters', type=int, default=None, help='shorten the training (default: the config)')
    args = parser.parse_args()
    python = sys.executable
    times = {}
    times['data'] = step('1/3 generating the demo data', [
        python, 'tools/misc/make_demo_data.py', '--root', args.data_root, '--tasks', 'seg', '--seed', str(args.seed)])
    options = [f'train_dataloader.dataset.data_root={osp.join(args.data_root, "ade", "ADEChallengeData2016")}',
               f'val_dataloader.dataset.data_root={osp.join(args.data_root, "ade", "ADEChallengeData2016")}',
               f'test_dataloader.dataset.data_root={osp.join(args.data_root, "ade", "ADEChallengeData2016")}']
    if args.max_iters:
        options += [f'train_cfg.max_iters={args.max_iters}', f'train_cfg.val_interval={args.max_iters}']
    times['train'] = step('2/3 training the Vim-bilinear UperNet on it', [
        python, 'tools/train.py', CONFIG, '--work-dir', args.work_dir, '--cfg-options', *options])
    with open(osp.join(args.work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics_file = osp.join(args.work_dir, 'demo_metrics.json')
    show_dir = 'predictions'
    times['test'] = step('3/3 evaluating it and drawing its predictions', [
        python, 'tools/test.py', CONFIG, checkpoint, '--work-dir', args.work_dir, '--show-dir', show_dir,
        '--out-metrics', metrics_file, '--cfg-options', *options])
    with open(metrics_file) as f:
        metrics = json.load(f)
    pictures = []
    for dirpath, _, files in os.walk(args.work_dir):
        if osp.basename(dirpath) == show_dir or show_dir in dirpath.split(os.sep):
            pictures += [osp.join(dirpath, name) for name in files if name.endswith(('.png', '.jpg'))]
    print('\n==> demo finished')
    print(f'    time: data {times["data"]:.0f} s, training {times["train"]:.0f} s, evaluation {times["test"]:.0f} s, '
          f'total {sum(times.values()):.0f} s')
    print(f'    mIoU on the demo validation set: {metrics.get("mIoU", float("nan")):.2f} '
          f'(aAcc {metrics.get("aAcc", float("nan")):.2f}, mAcc {metrics.get("mAcc", float("nan")):.2f})')
    if pictures:
        print(f'    predictions next to ground truth: {len(pictures)} pictures in {osp.dirname(sorted(pictures)[0])}')
    print(f'    checkpoint: {checkpoint}')


if __name__ == '__main__':
    main()
