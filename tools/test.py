"""Evaluate a checkpoint with an mmssm config (classification, segmentation or detection).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR] [--cfg-options ...] [--launcher ...]

``--show-dir`` writes pictures of the predictions (next to the ground truth for segmentation and detection)
through MMEngine's visualizer.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmssm  # noqa: E402,F401
import mmssm.engine  # noqa: E402,F401
import mmssm.models  # noqa: E402,F401
from mmssm.utils.launch import check_dataset, load_config, setup_cpu_distributed, task_of  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--work-dir')
    parser.add_argument('--show-dir', help='write visualizations of the predictions here (inside the work dir)')
    parser.add_argument('--out-metrics', help='also write the metrics to this JSON file')
    parser.add_argument('--no-data-check', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, show_dir):
    """Draw every test image: the prediction next to the ground truth (mmseg, mmdet) or the predicted class
    (mmpretrain)."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show-dir: this config has no default_hooks.visualization to draw with.')
    if hook.type == 'SegVisualizationHook':  # mmseg: draws through the visualizer's save_dir
        hook.draw, hook.interval = True, 1
        cfg.visualizer.save_dir = osp.join(cfg.work_dir, show_dir)
    elif hook.type == 'DetVisualizationHook':  # mmdet: its own output folder (inside the run's log dir)
        hook.draw, hook.interval = True, 1
        hook.test_out_dir = show_dir
    else:  # mmpretrain's VisualizationHook
        hook.enable = True
        hook.out_dir = show_dir


def main(argv=None):
    args = parse_args(argv)
    try:
        if not osp.isfile(args.checkpoint):
            raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist.')
        cfg = load_config(args.config, args.cfg_options)
        task = task_of(cfg)
        if not args.no_data_check:
            check_dataset(cfg, 'test')
        cfg.launcher = args.launcher
        cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0])
        cfg.load_from = args.checkpoint
        if args.show_dir:
            enable_visualization(cfg, args.show_dir)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f'error: {error}')
    setup_cpu_distributed(cfg, args.launcher)
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    runner.logger.info(f'mmssm: {task} evaluation of {args.checkpoint}')
    metrics = runner.test()
    if args.out_metrics:
        import json
        with open(args.out_metrics, 'w') as f:
            json.dump({k: float(v) if hasattr(v, '__float__') else v for k, v in metrics.items()}, f, indent=1)
    return metrics


if __name__ == '__main__':
    main()
