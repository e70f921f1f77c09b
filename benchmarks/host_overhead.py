"""Host (Python) time of one Vim (or MambaVision: --model mambavision) forward on the channels-last path, with the
Triton kernel launches stubbed out: what the CPU spends per pass before any GPU work, i.e. the floor of a host-bound
inference pass. Runs on a CPU:

    TRITON_INTERPRET=1 python benchmarks/host_overhead.py --arch tiny [--profile]
    TRITON_INTERPRET=1 python benchmarks/host_overhead.py --model mambavision --arch tiny
    TRITON_INTERPRET=1 python benchmarks/host_overhead.py --arch tiny --train   # forward + backward
    TRITON_INTERPRET=1 python benchmarks/host_overhead.py --arch tiny --train --no-fused-training

(TRITON_INTERPRET=1 lets the channels-last path run on CPU tensors; the stubs replace the kernels, so nothing is
interpreted.) The matmuls still run, on tiny tensors (batch 1, 32 px: 5 tokens; MambaVision with one window a map
in its hybrid stages, 2 x 2 and 1 x 1 tokens, as at 224 px). Prints the min and median over
--rounds rounds of --passes passes, and with --profile the functions by their own time (cProfile).
"""
import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time

import torch

sys.path.insert(0, '.')


class _NoLaunch:
    """Stands in for a @triton.jit kernel: ``kernel[grid](...)`` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def stub_kernels():
    import mmssm.ops.causal_conv1d as conv
    import mmssm.ops.fused_add_norm as add_norm
    from mmssm.ops.selective_scan import triton_scan
    for module, names in ((conv, ('_conv_cl_kernel', '_conv_cl_bwd_kernel', '_conv_cl_dx_kernel')),
                          (add_norm, ('_add_norm_fwd_kernel', '_add_norm_bwd_kernel')),
                          (triton_scan, ('_scan_fwd_seq_kernel', '_scan_bwd_seq_kernel', '_scan_combine_kernel'))):
        for name in names:
            setattr(module, name, _NoLaunch())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='vim', choices=['vim', 'mambavision'])
    parser.add_argument('--arch', default='tiny')
    parser.add_argument('--passes', type=int, default=20)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--profile', action='store_true')
    parser.add_argument('--train', action='store_true',
                        help='time a training step (forward, backward of the sum of the outputs) instead')
    parser.add_argument('--no-fused-training', dest='fused_training', action='store_false',
                        help="Vim's mixers with fused_training=False (autograd's graph of the unfused path)")
    parser.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16'],
                        help="the model's dtype (the GPU benchmarks' inference runs a bf16 model)")
    args = parser.parse_args()
    if os.environ.get('TRITON_INTERPRET') != '1':
        sys.exit('run with TRITON_INTERPRET=1 (the channels-last path on CPU tensors)')
    stub_kernels()
    from mmssm.models import MambaVision, Vim
    torch.set_num_threads(1)
    dtype = dict(fp32=torch.float32, bf16=torch.bfloat16)[args.dtype]
    if args.model == 'vim':
        model = Vim(args.arch, img_size=32, patch_size=16,
                    mixer_cfg=dict(scan_backend='triton', fused_training=args.fused_training))
        blocks = f'{len(model.layers)} layers'
    else:
        model = MambaVision(args.arch, window_size=(8, 8, 2, 1), mixer_cfg=dict(scan_backend='triton'))
        blocks = f'{sum(len(level.blocks) for level in model.levels)} blocks'
    model = model.to(dtype).train(args.train)
    x = torch.randn(1, 3, 32, 32, dtype=dtype)

    def step():
        if args.train:
            sum(out.sum() for out in model(x)).backward()
        else:
            model(x)

    times = []
    with torch.inference_mode(not args.train):
        for _ in range(3):
            step()
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.passes):
                step()
            times.append((time.perf_counter() - start) / args.passes * 1e3)
        print(f'{type(model).__name__}-{args.arch} host time per {"training step" if args.train else "forward"}: '
              f'min {min(times):.2f} ms, median {statistics.median(times):.2f} ms ({blocks})')
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.passes):
                step()
            profiler.disable()
            pstats.Stats(profiler).sort_stats('tottime').print_stats(25)


if __name__ == '__main__':
    main()
