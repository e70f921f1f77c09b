"""Time the torch selective scan against the float64 naive loop, every method, forward and forward+backward.

    python benchmarks/scan_cpu.py [--shape 8 384 197 16] [--repeats 5] [--json out.json]

Prints a markdown table (median of --repeats runs after one warm-up) and writes JSON when asked. The warm-up
includes torch.compile of the fused kernels of the methods other than zoh (a few seconds each, cached on disk by
torch's inductor afterwards); MMSSM_SCAN_COMPILE=0 in the environment times the eager kernels instead.
"""
import argparse
import json
import platform
import statistics
import time
from functools import partial

import torch

from mmssm.ops.selective_scan import METHODS, selective_scan, selective_scan_naive


def make_inputs(batch, dim, length, state, dtype, requires_grad):
    generator = torch.Generator().manual_seed(0)
    tensors = dict(
        u=torch.randn(batch, dim, length, generator=generator),
        delta=torch.randn(batch, dim, length, generator=generator) * 0.5,
        A=-torch.arange(1, state + 1, dtype=torch.float32).repeat(dim, 1),  # S4D-real, as Mamba initializes
        B=torch.randn(batch, state, length, generator=generator),
        C=torch.randn(batch, state, length, generator=generator),
        D=torch.ones(dim), z=torch.randn(batch, dim, length, generator=generator),
        delta_bias=torch.full((dim,), -4.0))  # softplus(-4 + N(0, 0.5)) ~ 0.02: Mamba's dt range
    return {k: v.to(dtype).requires_grad_(requires_grad) for k, v in tensors.items()}


def forward(scan, inputs, method):
    with torch.no_grad():
        scan(**inputs, discretization=method)


def forward_backward(inputs, method):
    y = selective_scan(**inputs, discretization=method)
    y.backward(torch.ones_like(y))


def median_ms(function, repeats):
    if repeats < 1:
        return float('nan')
    function()  # warm-up (and, for the methods other than zoh, torch.compile of their kernels on first use)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--shape', type=int, nargs=4, default=[8, 384, 197, 16], metavar=('B', 'D', 'L', 'N'))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--naive-repeats', type=int, default=1, help='0 skips the naive loop')
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args()
    batch, dim, length, state = args.shape
    results = []
    for method in args.methods:
        inputs = make_inputs(batch, dim, length, state, torch.float32, requires_grad=True)

        row = dict(method=method,
                   forward_ms=median_ms(partial(forward, selective_scan, inputs, method), args.repeats),
                   forward_backward_ms=median_ms(partial(forward_backward, inputs, method), args.repeats),
                   naive_forward_ms=median_ms(partial(forward, selective_scan_naive, inputs, method),
                                              args.naive_repeats))
        results.append(row)
        print(f'{method}: ' + ', '.join(f'{k} {v:.1f}' for k, v in row.items() if k != 'method'), flush=True)
    zoh = next((r for r in results if r['method'] == 'zoh'), None)
    print(f'\n(B, D, L, N) = {tuple(args.shape)}, float32, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}\n')
    print('| method | forward (ms) | forward+backward (ms) | naive float64 forward (ms) | fwd / zoh | fwd+bwd / zoh |')
    print('| --- | --- | --- | --- | --- | --- |')
    for row in results:
        ratio_f = row['forward_ms'] / zoh['forward_ms'] if zoh else float('nan')
        ratio_fb = row['forward_backward_ms'] / zoh['forward_backward_ms'] if zoh else float('nan')
        print(f"| {row['method']} | {row['forward_ms']:.1f} | {row['forward_backward_ms']:.1f} | "
              f"{row['naive_forward_ms']:.0f} | {ratio_f:.2f} | {ratio_fb:.2f} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(shape=args.shape, threads=torch.get_num_threads(), torch=torch.__version__,
                           results=results), f, indent=2)


if __name__ == '__main__':
    main()
