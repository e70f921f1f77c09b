"""The Triton scan's launch constants swept on a GPU: channels per program x warps, forward and forward+backward,
both directions in one call, in the layouts of the mixers' channels-last path (bf16, zoh unless --methods).

    python benchmarks/scan_tune.py --shapes 128,384,197,16 128,768,197,16

Prints milliseconds per call (medians as scan_gpu.py) for each (BLOCK_D, warps); the module's current setting is
marked with *. ``--variants`` instead times forward and forward+backward at the module's settings with other values
of its constants, each variant one comma-separated list (``default`` for none):

    python benchmarks/scan_tune.py --shapes 128,384,197,16 --variants default BWD_BC_PARTIAL=0 CHECKPOINT_L=16

``--backend cuda`` times the compiled kernels instead (contiguous inputs; ``--variants`` then sets cuda_scan's
constants, e.g. ``FWD_SEGMENT_L=1073741824,BWD_SEGMENT_L=1073741824`` for the whole sequence per block).
"""
import argparse
import functools
import itertools
import sys

import torch

sys.path.insert(0, '.')
from benchmarks.profile_vim import kernel_totals  # noqa: E402
from benchmarks.scan_gpu import channels_last, make_direction, timed  # noqa: E402


def scan(pairs, z, method, train=False, backend='triton'):
    """Both directions' forward (inference) or forward + backward (``train``)."""
    from mmssm.ops.selective_scan import selective_scan_bidirectional
    inputs = {k: tuple(t.detach().requires_grad_(train and t.is_floating_point()) for t in v)
              for k, v in pairs.items()}
    outs = selective_scan_bidirectional(**inputs, z=z, delta_softplus=True, discretization=method, backend=backend)
    if train:
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])


def _value(text):
    return None if text == 'None' else int(text)


def time_variants(module, args, forward, train):
    """Forward and forward+backward under each variant's settings of ``module`` (restored after each)."""
    for variant in args.variants:
        settings = dict(item.split('=') for item in variant.split(',') if item != 'default')
        saved = {name: getattr(module, name) for name in settings}
        for name, text in settings.items():
            setattr(module, name, _value(text))
        times = []
        for stage, fn in (('fwd', forward), ('fwd+bwd', train)):
            with torch.inference_mode(stage == 'fwd'):
                times.append(f'{stage} {timed(fn, args.repeats, args.rounds):.3f}')
        if args.kernels:  # GPU time per call by kernel (host overhead excluded), the scan's kernels first
            with torch.inference_mode():
                inference = kernel_totals(forward, args.kernels)
            inference_us = sum(t for n, (t, _) in inference.items() if 'scan' in n or 'zoh' in n)
            kernels = kernel_totals(train, args.kernels)
            scan_us = sum(t for n, (t, _) in kernels.items() if 'scan' in n or 'zoh' in n)
            times.append(f'scan kernels: inference {inference_us / args.kernels / 1e3:.3f}, '
                         f'training {scan_us / args.kernels / 1e3:.3f}')
        print(f'{variant:40s} ' + '  '.join(times), flush=True)
        if args.kernels:
            for name, (total, _) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:4]:
                print(f'    {total / args.kernels / 1e3:7.3f} ms  {name[:90]}')
        for name, value in saved.items():
            setattr(module, name, value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shapes', nargs='+', default=['128,384,197,16', '128,768,197,16'])
    parser.add_argument('--methods', nargs='+', default=['zoh'])
    parser.add_argument('--blocks', nargs='+', type=int, default=[8, 16, 32, 64])
    parser.add_argument('--warps', nargs='+', type=int, default=[1, 2, 4, 8])
    parser.add_argument('--backward', action='store_true', help='sweep the backward constants too')
    parser.add_argument('--variants', nargs='+',
                        help='NAME=VALUE[,NAME=VALUE] settings of triton_scan (--backend cuda: cuda_scan) to compare')
    parser.add_argument('--kernels', type=int, default=0, metavar='PASSES',
                        help='with --variants: also each variant\'s GPU time of the scan kernels over PASSES calls '
                        '(torch.profiler, free of host overhead), inference and forward+backward, and the '
                        'forward+backward\'s largest kernels')
    parser.add_argument('--backend', choices=['triton', 'cuda'], default='triton')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    from mmssm.ops.selective_scan import cuda_scan, triton_scan
    if args.backend == 'cuda' and not args.variants:
        parser.error('--backend cuda times --variants (the block sweep is the Triton kernels\')')
    defaults = dict(fwd=(triton_scan.FWD_BLOCK_D, triton_scan.FWD_WARPS),
                    bwd=(triton_scan.BWD_BLOCK_D, triton_scan.BWD_WARPS))
    if not args.variants:  # the swept BLOCK_D as given (the module lowers it to keep FWD/BWD_PROGRAMS programs)
        triton_scan.FWD_PROGRAMS = triton_scan.BWD_PROGRAMS = 1
    print(torch.cuda.get_device_name(0), torch.__version__)
    for shape_text, method in itertools.product(args.shapes, args.methods):
        shape = tuple(int(v) for v in shape_text.split(','))
        directions = [make_direction(shape, torch.bfloat16, seed) for seed in (0, 1)]
        z = torch.randn(shape[:3], device='cuda', dtype=torch.bfloat16)
        if args.backend == 'triton':
            directions, z = channels_last(directions, z)
        pairs = {k: (directions[0][k], directions[1][k]) for k in directions[0]}

        forward = functools.partial(scan, pairs, z, method, backend=args.backend)
        train = functools.partial(scan, pairs, z, method, True, backend=args.backend)

        print(f'\n{shape} {method} ({args.backend}): ms per call, both directions')
        if args.variants:
            time_variants(cuda_scan if args.backend == 'cuda' else triton_scan, args, forward, train)
            continue
        for stage, fn in (('fwd', forward), ('bwd', train)):
            if stage == 'bwd' and not args.backward:
                continue
            prefix = stage.upper()
            for block, warps in itertools.product(args.blocks, args.warps):
                setattr(triton_scan, f'{prefix}_BLOCK_D', block)
                setattr(triton_scan, f'{prefix}_WARPS', warps)
                try:
                    with torch.inference_mode(stage == 'fwd'):
                        ms = timed(fn, args.repeats, args.rounds)
                    text = f'{ms:.3f}'
                except Exception as error:  # a configuration that does not compile (registers, shared memory)
                    text = f'failed: {type(error).__name__}'
                mark = '*' if (block, warps) == defaults[stage] else ' '
                label = 'fwd' if stage == 'fwd' else 'fwd+bwd'
                print(f'{label:8s} BLOCK_D {block:3d} warps {warps}{mark} {text}')
            setattr(triton_scan, f'{prefix}_BLOCK_D', defaults[stage][0])
            setattr(triton_scan, f'{prefix}_WARPS', defaults[stage][1])


if __name__ == '__main__':
    main()
