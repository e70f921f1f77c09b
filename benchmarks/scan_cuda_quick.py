"""Quick timing of the CUDA selective-scan kernels (mmssm.ops.selective_scan.cuda_scan) at one shape.

    python benchmarks/scan_cuda_quick.py --shape 128 384 197 16 --dtype bf16 --methods zoh highorder

Prints forward and forward+backward times for one direction and for both directions in one launch, and the
DRAM-traffic floor of the forward (u, delta, z read, out written). Writes JSON with --json.
"""
import argparse
import json

import torch

from mmssm.ops.selective_scan import METHODS, cuda_scan

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def timed(fn, warmup=5, iters=30):
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def inputs(batch, dim, length, state, dtype, seed):
    g = torch.Generator(device='cuda').manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device='cuda') * scale).to(dtype)
    return dict(u=randn(batch, dim, length), delta=randn(batch, dim, length, scale=0.5),
                A=-torch.exp(torch.rand(dim, state, generator=g, device='cuda') * 2.7),
                B=randn(batch, 1, state, length), C=randn(batch, 1, state, length),
                D=torch.randn(dim, generator=g, device='cuda'), z=randn(batch, dim, length),
                delta_bias=torch.rand(dim, generator=g, device='cuda') * 0.1 - 4.0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--shape', type=int, nargs=4, default=[128, 384, 197, 16], metavar=('B', 'D', 'L', 'N'))
    parser.add_argument('--dtype', default='bf16', choices=DTYPES)
    parser.add_argument('--methods', nargs='+', default=list(METHODS))
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    batch, dim, length, state = args.shape
    dtype = DTYPES[args.dtype]
    directions = [inputs(batch, dim, length, state, dtype, seed) for seed in (0, 1)]
    names = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias', 'z')
    element = torch.tensor([], dtype=dtype).element_size()
    floor_bytes = 4 * batch * dim * length * element  # u, delta, z in, out
    bandwidth = 3.35e12 if 'H100' in torch.cuda.get_device_name() else 4.8e12
    print(f'{torch.cuda.get_device_name()}  shape (B, D, L, N) = {tuple(args.shape)}  {args.dtype}; '
          f'forward traffic floor per direction {floor_bytes / bandwidth * 1e3:.3f} ms')
    print(f'{"method":10s} {"fwd 1dir":>9s} {"fwd 2dir":>9s} {"f+b 1dir":>9s} {"f+b 2dir":>9s}  (ms)')
    results = {}
    for method in args.methods:
        row = {}
        for count in (1, 2):
            lists = {name: [d[name] for d in directions[:count]] for name in names}
            reverse = [False, True][:count]
            call = [lists[name] for name in names]

            def fwd(call=call, method=method, reverse=reverse):
                return cuda_scan.forward(*call, True, method, reverse, save_for_backward=False)

            dout = [torch.randn_like(u) for u in lists['u']]

            def fwd_bwd(call=call, method=method, reverse=reverse, dout=dout):
                out, last, saved = cuda_scan.forward(*call, True, method, reverse, save_for_backward=True)
                return cuda_scan.backward(dout, *call, True, method, reverse, saved, [])

            row[f'fwd_{count}dir'] = timed(fwd)
            row[f'fwd_bwd_{count}dir'] = timed(fwd_bwd)
        results[method] = row
        print(f'{method:10s} {row["fwd_1dir"]:9.3f} {row["fwd_2dir"]:9.3f} {row["fwd_bwd_1dir"]:9.3f} '
              f'{row["fwd_bwd_2dir"]:9.3f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=torch.cuda.get_device_name(), shape=args.shape, dtype=args.dtype,
                           results=results), f, indent=1)


if __name__ == '__main__':
    main()
