"""The selective scan on a GPU: mmssm's compiled backends against mamba-ssm's selective_scan_cuda, in one run.

mamba-ssm's kernel is built from its sdist on the same GPU (benchmarks/mamba_kernels.py, the scan only) and
called directly (no autograd), one direction per call, z-gated with softplus, as Mamba and Vim call it; "two
calls" is the two directions of a Vim block. mmssm runs through its public functions (autograd, custom ops):
``selective_scan`` for one direction and ``selective_scan_bidirectional`` for both in one launch.

    python benchmarks/scan_gpu.py --sdist-dir .kit/sdist --json scan_gpu.json

Times are medians over --rounds rounds of --repeats back-to-back calls between two CUDA events (milliseconds per
call). Bandwidth: the bytes a forward must move at least (u, delta, z read and the output written per direction,
B and C read) over its time, against the card's copy bandwidth measured in the same run (a 1 GiB
device-to-device copy, read + write).
"""
import argparse
import json
import logging
import statistics
import sys
import time

import torch

sys.path.insert(0, '.')

SHAPES = ((128, 384, 197, 16), (128, 768, 197, 16), (8, 384, 4096, 16), (2, 384, 16384, 16))
DTYPES = {'bf16': torch.bfloat16, 'fp32': torch.float32}
logger = logging.getLogger('scan_gpu')


def timed(fn, repeats, rounds, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / repeats)
    return statistics.median(times)


def copy_bandwidth(repeats, rounds):
    source = torch.empty(1 << 30, dtype=torch.uint8, device='cuda')
    target = torch.empty_like(source)
    ms = timed(lambda: target.copy_(source), repeats, rounds)
    return 2 * source.numel() / ms / 1e6  # GB/s


def make_direction(shape, dtype, seed):
    batch, dim, length, state = shape
    generator = torch.Generator(device='cuda').manual_seed(seed)

    def randn(*size, scale=1.0, dtype=dtype):
        return (torch.randn(*size, generator=generator, device='cuda') * scale).to(dtype)

    return dict(u=randn(batch, dim, length), delta=randn(batch, dim, length, scale=0.5),
                A=-torch.exp(torch.rand(dim, state, generator=generator, device='cuda') * 2.7),
                B=randn(batch, 1, state, length), C=randn(batch, 1, state, length),
                D=randn(dim, dtype=torch.float32), delta_bias=randn(dim, scale=0.3, dtype=torch.float32) - 2.0)


def forward_bytes(shape, dtype):
    batch, dim, length, state = shape
    size = torch.finfo(dtype).bits // 8
    return size * (4 * batch * dim * length + 2 * batch * state * length)


def bench_mamba(scan_cuda, directions, z, repeats, rounds):
    def forward():
        return [scan_cuda.fwd(d['u'], d['delta'], d['A'], d['B'], d['C'], d['D'], z, d['delta_bias'], True)
                for d in directions]

    saved = forward()
    dout = torch.randn_like(z)

    def forward_backward():
        for d in directions:
            out, x, *_ = scan_cuda.fwd(d['u'], d['delta'], d['A'], d['B'], d['C'], d['D'], z, d['delta_bias'],
                                       True)
            scan_cuda.bwd(d['u'], d['delta'], d['A'], d['B'], d['C'], d['D'], z, d['delta_bias'], dout, x, out,
                          None, True, False)

    del saved
    one = timed(lambda: scan_cuda.fwd(*[directions[0][k] for k in ('u', 'delta', 'A', 'B', 'C', 'D')], z,
                                      directions[0]['delta_bias'], True), repeats, rounds)
    return dict(fwd_1dir=one, fwd_2dir=timed(forward, repeats, rounds),
                fwd_bwd_2dir=timed(forward_backward, max(1, repeats // 2), rounds))


def bench_mmssm(backend, method, directions, z, repeats, rounds):
    from mmssm.ops.selective_scan import selective_scan, selective_scan_bidirectional
    names = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')
    pairs = {name: (directions[0][name], directions[1][name]) for name in names}
    kwargs = dict(discretization=method, backend=backend)
    result = {}
    with torch.no_grad():
        result['fwd_1dir'] = timed(lambda: selective_scan(**directions[0], z=z, **kwargs), repeats, rounds)
        result['fwd_2dir'] = timed(lambda: selective_scan_bidirectional(**pairs, z=z, **kwargs), repeats, rounds)
    leaves = {name: tuple(t.detach().requires_grad_() for t in pair) for name, pair in pairs.items()}
    z_leaf = z.detach().requires_grad_()
    inputs = [t for pair in leaves.values() for t in pair] + [z_leaf]
    dout = torch.randn_like(z)

    def forward_backward():
        y_f, y_b = selective_scan_bidirectional(**leaves, z=z_leaf, **kwargs)
        torch.autograd.grad((y_f, y_b), inputs, (dout, dout))

    result['fwd_bwd_2dir'] = timed(forward_backward, max(1, repeats // 2), rounds)
    return result


def channels_last(directions, z):
    """The same values in the layouts of a Vim block's channels-last path (pseudo-backend 'triton-cl'): u, delta
    and z as (batch, L, dim) memory, B and C as (batch, L, N) memory, all viewed (batch, dim, L) / (batch, 1, N, L)."""
    def rows(t):
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)

    converted = [{k: rows(v) if k in ('u', 'delta', 'B', 'C') else v for k, v in d.items()} for d in directions]
    return converted, rows(z)


def sequential(backend, fn, *args):
    """``fn(*args)``; for the pseudo-backend 'triton-seq', with the Triton forward's chunking off (each program
    walks whole sequences, as before the chunk-parallel forward)."""
    if backend != 'triton-seq':
        return fn(*args)
    from mmssm.ops.selective_scan import triton_scan
    saved = triton_scan.FWD_MIN_CHUNK
    triton_scan.FWD_MIN_CHUNK = 1 << 62
    try:
        return fn(*args)
    finally:
        triton_scan.FWD_MIN_CHUNK = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sdist-dir', default='.kit/sdist', help='folder with the mamba-ssm sdist')
    parser.add_argument('--build-dir', default='/tmp/mamba_build')
    parser.add_argument('--no-mamba', action='store_true', help='skip building and timing mamba-ssm')
    parser.add_argument('--backends', nargs='+', default=None, help='default: every compiled backend available; '
                        "'triton-seq' is the Triton backend with its chunk-parallel forward off, 'triton-cl' the "
                        'Triton backend on channels-last inputs (the layouts of the mixers\' channels-last path)')
    parser.add_argument('--methods', nargs='+', default=None)
    parser.add_argument('--dtypes', nargs='+', default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument('--shapes', nargs='+', default=None, help='B,D,L,N ...')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    from mmssm.ops.selective_scan import METHODS, available_backends
    backends = args.backends or [b for b in available_backends('cuda') if b != 'torch']
    methods = args.methods or list(METHODS)
    shapes = [tuple(int(v) for v in s.split(',')) for s in args.shapes] if args.shapes else SHAPES
    scan_cuda = None
    info = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, date=time.strftime('%Y-%m-%d'),
                command=' '.join(sys.argv), backends=backends)
    if not args.no_mamba:
        from benchmarks.mamba_kernels import build
        scan_cuda, _, seconds = build(args.sdist_dir, args.build_dir, conv=False)
        logger.info('built mamba-ssm selective_scan_cuda in %.0f s', seconds)
    bandwidth = copy_bandwidth(args.repeats, args.rounds)
    info['copy_bandwidth_GBps'] = bandwidth
    logger.info('%s: copy bandwidth %.0f GB/s', info['gpu'], bandwidth)
    rows = []
    for shape in shapes:
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            directions = [make_direction(shape, dtype, seed) for seed in (0, 1)]
            z = make_direction(shape, dtype, 2)['u']
            nbytes = forward_bytes(shape, dtype)
            entries = []
            if scan_cuda is not None:
                entries.append(('mamba-ssm', 'zoh', lambda d=directions, zz=z: bench_mamba(
                    scan_cuda, d, zz, args.repeats, args.rounds)))
            for backend in backends:
                inputs = channels_last(directions, z) if backend == 'triton-cl' else (directions, z)
                for method in methods:
                    entries.append((backend, method, lambda b=backend, m=method, d=inputs[0], zz=inputs[1]: sequential(
                        b, bench_mmssm, b.replace('-seq', '').replace('-cl', ''), m, d, zz, args.repeats,
                        args.rounds)))
            reference = None
            for impl, method, run in entries:
                result = run()
                row = dict(shape=list(shape), dtype=dtype_name, impl=impl, method=method, **result)
                row['fwd_2dir_GBps'] = 2 * nbytes / result['fwd_2dir'] / 1e6
                row['fwd_2dir_of_copy'] = row['fwd_2dir_GBps'] / bandwidth
                if impl == 'mamba-ssm':
                    reference = row
                if reference is not None:
                    row['fwd_2dir_speedup'] = reference['fwd_2dir'] / result['fwd_2dir']
                    row['fwd_bwd_2dir_speedup'] = reference['fwd_bwd_2dir'] / result['fwd_bwd_2dir']
                rows.append(row)
                logger.info('%s %s %-9s %-9s fwd 1dir %.3f ms | fwd 2dir %.3f ms (%.0f GB/s, %.0f%% of copy) | '
                            'fwd+bwd 2dir %.3f ms%s', shape, dtype_name, impl, method, result['fwd_1dir'],
                            result['fwd_2dir'], row['fwd_2dir_GBps'], 100 * row['fwd_2dir_of_copy'],
                            result['fwd_bwd_2dir'],
                            '' if 'fwd_2dir_speedup' not in row or impl == 'mamba-ssm' else
                            f" | vs mamba x{row['fwd_2dir_speedup']:.2f} fwd, x{row['fwd_bwd_2dir_speedup']:.2f} "
                            'fwd+bwd')
    # every method's time relative to zoh's, per shape, dtype and backend
    for row in rows:
        zoh = next((r for r in rows if r['shape'] == row['shape'] and r['dtype'] == row['dtype']
                    and r['impl'] == row['impl'] and r['method'] == 'zoh'), None)
        if zoh is not None:
            row['fwd_2dir_vs_zoh'] = row['fwd_2dir'] / zoh['fwd_2dir']
            row['fwd_bwd_2dir_vs_zoh'] = row['fwd_bwd_2dir'] / zoh['fwd_bwd_2dir']
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(info=info, rows=rows), f, indent=1)
    print(f"\n{info['gpu']}, copy bandwidth {bandwidth:.0f} GB/s; ms per call (median)")
    print('| shape (B,D,L,N) | dtype | impl | method | fwd 1 dir | fwd 2 dirs | fwd 2 dirs GB/s (% copy) | '
          'fwd+bwd 2 dirs | x mamba fwd | x mamba fwd+bwd | / zoh fwd | / zoh fwd+bwd |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        def fmt(key, row=row):
            return f'{row[key]:.2f}' if key in row else ''
        print(f"| {tuple(row['shape'])} | {row['dtype']} | {row['impl']} | {row['method']} | {row['fwd_1dir']:.3f} "
              f"| {row['fwd_2dir']:.3f} | {row['fwd_2dir_GBps']:.0f} ({100 * row['fwd_2dir_of_copy']:.0f}%) | "
              f"{row['fwd_bwd_2dir']:.3f} | {fmt('fwd_2dir_speedup') if row['impl'] != 'mamba-ssm' else ''} | "
              f"{fmt('fwd_bwd_2dir_speedup') if row['impl'] != 'mamba-ssm' else ''} | {fmt('fwd_2dir_vs_zoh')} | "
              f"{fmt('fwd_bwd_2dir_vs_zoh')} |")


if __name__ == '__main__':
    main()
