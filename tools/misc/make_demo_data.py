"""Generate the demo dataset (ADE20K, COCO and ImageNet layouts), deterministic from a seed.

    python tools/misc/make_demo_data.py [--root data/demo] [--tasks seg det cls] [--seed 0] [--overwrite]
                                        [--num-train N] [--num-val N] [--image-size S] [--quiet]

Counts and the image size apply to every task given; without them each task has its defaults (seg and det:
200 train / 40 val images of 128x128; cls: 100 train / 20 val images per class, 64x64). For cls the counts are per
class. What the data holds and how to read it: ``mmssm/datasets/demo_data.py``.
"""
import argparse
import os.path as osp
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing mmssm

from mmssm.datasets.demo_data import TASKS, demo_dataset_cfg, make_demo_data  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Generate the demo dataset in the layouts of ADE20K (seg), COCO '
                                     '(det) and ImageNet (cls).')
    parser.add_argument('--root', default='data/demo', help='where the layouts go (default: data/demo)')
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=TASKS, help='which layouts to write')
    parser.add_argument('--seed', type=int, default=0, help='the same seed gives byte-identical files')
    parser.add_argument('--num-train', type=int, help='train images (cls: per class) for every task given')
    parser.add_argument('--num-val', type=int, help='val images (cls: per class) for every task given')
    parser.add_argument('--image-size', type=int, help='side of the square images for every task given')
    parser.add_argument('--overwrite', action='store_true', help='regenerate data that exists already')
    parser.add_argument('--quiet', action='store_true', help='no progress counters')
    return parser.parse_args(argv)


def describe(result):
    lines = []
    for task in TASKS:
        if task not in result:
            continue
        info = result[task]
        state = 'kept (exists; --overwrite regenerates it)' if info['skipped'] else 'written'
        counts = ', '.join(f'{split} {n}' for split, n in info['num_images'].items())
        lines.append(f'{task}: {info["data_root"]} {state}: {counts} images of {info["image_size"]}x'
                     f'{info["image_size"]}')
        if task == 'seg':
            for split in ('train', 'val'):
                lines.append(f'  {split}: {osp.join(info["data_root"], info["img_dir"][split])}/*.jpg, '
                             f'{osp.join(info["data_root"], info["ann_dir"][split])}/*.png')
            lines.append('  labels in the PNGs: 0 unlabelled (edges), 1 background, 2..5 '
                         + ', '.join(info['classes'][1:]) + '; after reduce_zero_label: ' + ', '.join(
                             f'{i} {name}' for i, name in enumerate(info['classes'])))
        elif task == 'det':
            for split in ('train', 'val'):
                lines.append(f'  {split}: {osp.join(info["data_root"], info["img_dir"][split])}/*.jpg, '
                             f'{osp.join(info["data_root"], info["ann_file"][split])} '
                             f'({info.get("num_instances", {}).get(split, "?")} instances)')
            lines.append('  categories: ' + ', '.join(f'{i + 1} {name}' for i, name in enumerate(info['classes'])))
        else:
            for split in ('train', 'val'):
                lines.append(f'  {split}: {osp.join(info["data_root"], info["data_prefix"][split])}/<class>/*.jpg, '
                             f'{osp.join(info["data_root"], info["ann_file"][split])}')
            lines.append('  classes: ' + ', '.join(f'{i} {name}' for i, name in enumerate(info['classes'])))
        cfg = demo_dataset_cfg(task, 'train', result['root'])
        cfg.pop('pipeline')
        lines.append(f'  dataset config (train): {cfg}')
    lines.append(f'took {result["seconds"]:.1f} s')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        result = make_demo_data(root=args.root, tasks=args.tasks, seed=args.seed, num_train=args.num_train,
                                num_val=args.num_val, image_size=args.image_size, overwrite=args.overwrite,
                                progress=not args.quiet)
    except (ValueError, FileExistsError) as error:
        sys.exit(f'error: {error}')
    print(describe(result))
    return result


if __name__ == '__main__':
    main()
