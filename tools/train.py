"""Train a model from an mmssm config (classification, segmentation or detection: the config's base says which).

    python tools/train.py configs/seg/upernet_vim_bilinear_ade20k.py [--work-dir DIR] [--resume [CKPT]] [--amp]
                          [--cuda-graph] [--cfg-options key=value ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import os
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # from mmengine, on every run
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # a development checkout works uninstalled

import mmssm  # noqa: E402,F401  (guards mmpretrain's import under transformers >= 5)
import mmssm.engine  # noqa: E402,F401
import mmssm.models  # noqa: E402,F401
from mmssm.utils.launch import (  # noqa: E402
    add_weights_only_hook,
    check_dataset,
    enable_amp,
    enable_cuda_graph,
    load_config,
    setup_cpu_distributed,
    task_of,
)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or without a value from the latest one in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (GPU)')
    parser.add_argument('--cuda-graph', action='store_true',
                        help='replay each training step from a CUDA graph (mmssm.CUDAGraphTrainHook; one GPU; with '
                             '--amp: bf16 autocast instead of AmpOptimWrapper)')
    parser.add_argument('--no-data-check', action='store_true', help='skip the check that the dataset exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_cfg.max_iters=100 (keys must exist)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_cfg(args):
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.cuda_graph:
        enable_cuda_graph(cfg, args.amp, args.launcher)
    elif args.amp:
        enable_amp(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    add_weights_only_hook(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    try:  # mistakes in the command or config: one clear message, no traceback
        cfg = build_cfg(args)
        task = task_of(cfg)
        if not args.no_data_check:
            check_dataset(cfg, 'train')
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f'error: {error}')
    setup_cpu_distributed(cfg, args.launcher)
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else None
    if runner is None:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    runner.logger.info(f'mmssm: {task} run of {args.config}, work dir {cfg.work_dir}')
    runner.train()


if __name__ == '__main__':
    main()
