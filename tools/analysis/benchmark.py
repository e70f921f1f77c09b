"""Inference throughput of a config's model on random input (and, on CUDA, its peak memory).

    python tools/analysis/benchmark.py configs/cls/vim-tiny-p16_8xb128_in1k.py [--shape H [W]] [--batch-size B]
                                       [--iters N] [--warmup W] [--device cpu|cuda] [--amp] [--cuda-graph]
                                       [--cfg-options key=value ...]

What is timed is ``model(inputs)`` in 'tensor' mode under ``torch.no_grad()``, on an input already through the
data preprocessor: a classifier's backbone, neck and head; a segmentor's backbone, neck and decode head; a
detector's network with its RPN and RoI heads (no post-processing, no data loading). Each iteration ends with a
device synchronization, so the per-iteration times are real; throughput is images / total time of the timed
iterations. ``--amp`` runs under autocast (float16 on CUDA, bfloat16 on CPU). ``--cuda-graph`` (CUDA) times
the forward replayed from a CUDA graph (mmssm.engine.CUDAGraphForward: captured in the first warm-up iteration; no
host time per pass).
"""
import argparse
import os.path as osp
import statistics
import sys
import time
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # from mmengine, on every run
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # an uninstalled checkout works

import mmssm  # noqa: E402,F401  (guards mmpretrain's import under transformers >= 5)
import mmssm.engine  # noqa: E402,F401
import mmssm.models  # noqa: E402,F401


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input height and width (one value: square); default: the backbone img_size for '
                             'classification, the crop size for segmentation, 800 1333 for detection')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward (default 1)')
    parser.add_argument('--iters', type=int, default=50, help='timed iterations (default 50)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations first (default 5)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default=None,
                        help='default: cuda when available, else cpu')
    parser.add_argument('--amp', action='store_true', help='autocast: float16 on CUDA, bfloat16 on CPU')
    parser.add_argument('--cuda-graph', action='store_true',
                        help='replay the forward from a CUDA graph (mmssm.engine.CUDAGraphForward), CUDA only')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.backbone.discretization=rk4 (keys must exist)')
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error(f'--shape takes H or H W, got {len(args.shape)} values.')
    for name in ('batch_size', 'iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1.')
    if args.warmup < 0:
        parser.error('--warmup must be at least 0.')
    if args.cuda_graph and args.device == 'cpu':
        parser.error('--cuda-graph needs --device cuda.')
    if args.cuda_graph and args.warmup < 1:
        parser.error('--cuda-graph needs --warmup of at least 1 (the capture happens there).')
    return args


def progress(message):
    print(message, flush=True)


def show_progress(message, done, total):
    """An iteration counter rewritten on one line in a terminal; in a log, about ten lines per loop."""
    if sys.stdout.isatty():
        print(f'\r{message}', end='\n' if done == total else '', flush=True)
    elif done == total or done % max(1, total // 10) == 0:
        print(message, flush=True)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.analysis import parameter_count

    from mmssm.analysis.flops import build_model_from_cfg, default_shape, prepare_dummy_input
    from mmssm.utils.launch import load_config

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        if device == 'cuda' and not torch.cuda.is_available():
            raise ValueError('--device cuda, but torch sees no CUDA device.')
        if args.cuda_graph and device != 'cuda':
            raise ValueError('--cuda-graph needs a CUDA device, and torch sees none.')
        cfg = load_config(args.config, args.cfg_options)
        progress('building model...')
        model, task = build_model_from_cfg(cfg, device)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f'error: {error}')
    shape = default_shape(cfg, task) if args.shape is None else tuple(args.shape * (3 - len(args.shape)))
    inputs = prepare_dummy_input(model, task, shape, batch_size=args.batch_size, device=device)
    amp_dtype = torch.float16 if device == 'cuda' else torch.bfloat16
    forward = model
    if args.cuda_graph:
        from mmssm.engine import CUDAGraphForward
        forward = CUDAGraphForward(model)

    def synchronize():
        if device == 'cuda':
            torch.cuda.synchronize()

    def run_once():
        # (autocast's weight-cast cache would hold tensors freed outside a graph's capture)
        with torch.no_grad(), torch.autocast(device, dtype=amp_dtype, enabled=args.amp,
                                             cache_enabled=not args.cuda_graph):
            forward(inputs)
        synchronize()

    progress(f'{type(model).__name__} ({task}) on {device}, input {tuple(inputs.shape)}'
             + (f', autocast {str(amp_dtype).replace("torch.", "")}' if args.amp else '')
             + (', CUDA graph' if args.cuda_graph else ''))
    for index in range(args.warmup):
        run_once()
        show_progress(f'warming up: iteration {index + 1}/{args.warmup}', index + 1, args.warmup)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(args.iters):
        start = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - start)
        show_progress(f'timing: iteration {index + 1}/{args.iters}, '
                      f'{(index + 1) * args.batch_size / sum(times):.2f} img/s', index + 1, args.iters)

    images = args.iters * args.batch_size
    line = '=' * 72
    rows = [('config', args.config),
            ('model', f'{type(model).__name__} ({task}), {parameter_count(model)[""] / 1e6:.3f} M params'),
            ('device', torch.cuda.get_device_name() if device == 'cuda' else f'cpu ({torch.get_num_threads()} '
                                                                                f'threads)'),
            ('input', f'{args.batch_size} x {inputs.shape[1]} x {inputs.shape[2]} x {inputs.shape[3]}'
                      + (' (autocast)' if args.amp else '') + (' (CUDA graph)' if args.cuda_graph else '')),
            ('throughput', f'{images / sum(times):.2f} img/s ({args.iters} iterations after {args.warmup} '
                           f'warm-up)'),
            ('latency', f'{1e3 * statistics.median(times):.2f} ms per batch (median; min '
                        f'{1e3 * min(times):.2f}, max {1e3 * max(times):.2f})')]
    if device == 'cuda':
        rows.append(('peak memory', f'{torch.cuda.max_memory_allocated() / 2**20:.1f} MiB allocated '
                                    '(torch.cuda.max_memory_allocated, timed iterations)'))
    width = max(len(name) for name, _ in rows) + 2
    print(line)
    for name, value in rows:
        print(f'{name:<{width}}{value}')
    print(line)


if __name__ == '__main__':
    main()
