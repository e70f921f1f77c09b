"""Where the host time of an eager Vim inference pass goes on a GPU machine: Vim at batch 1 (the GPU idles, so a
pass takes its host time), once with every kernel launched and once with the Triton launches replaced by no-ops;
the difference is what the Triton launches cost. Also times single launches of small torch ops for scale.

    python benchmarks/launch_overhead.py --models vim_t_triton --passes 200

Needs a GPU. Prints ms per pass and, per Triton kernel, its launches per pass and host microseconds per launch.
"""
import argparse
import functools
import sys
import time

import torch

sys.path.insert(0, '.')
from benchmarks.host_overhead import _NoLaunch  # noqa: E402
from benchmarks.vim_gpu import build_vim  # noqa: E402

KERNELS = (('mmssm.ops.causal_conv1d', '_conv_cl_kernel'), ('mmssm.ops.fused_add_norm', '_add_norm_fwd_kernel'),
           ('mmssm.ops.selective_scan.triton_scan', '_scan_fwd_seq_kernel'))


def per_pass(step, passes):
    """Host ms per call of ``step``, queued without synchronizing (the GPU must keep up: batch 1)."""
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(passes):
        step()
    queued = (time.perf_counter() - start) / passes * 1e3
    torch.cuda.synchronize()
    return queued, (time.perf_counter() - start) / passes * 1e3


class _Counting:
    """Wraps a kernel: counts ``kernel[grid](...)`` launches and times them on the host."""

    def __init__(self, kernel):
        self.kernel, self.launches, self.seconds = kernel, 0, 0.0

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            start = time.perf_counter()
            launch(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            self.launches += 1
        return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default='vim_t_triton')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--passes', type=int, default=200)
    args = parser.parse_args()
    import importlib
    modules = [(importlib.import_module(module), name) for module, name in KERNELS]
    for model_name in args.models.split(','):
        model = build_vim(model_name, args.size).cuda().to(torch.bfloat16).eval()
        x = torch.randn(args.batch, 3, args.size, args.size, device='cuda', dtype=torch.bfloat16)
        originals = [getattr(module, name) for module, name in modules]
        step = functools.partial(model, x)
        with torch.inference_mode():
            queued, real = per_pass(step, args.passes)
            counters = [_Counting(kernel) for kernel in originals]
            for (module, name), counter in zip(modules, counters):
                setattr(module, name, counter)
            per_pass(step, args.passes)
            for module, name in modules:
                setattr(module, name, _NoLaunch())
            queued_stub, stub = per_pass(step, args.passes)
            for (module, name), kernel in zip(modules, originals):
                setattr(module, name, kernel)
        print(f'{model_name} {args.size}px batch {args.batch}: {real:.2f} ms/pass ({queued:.2f} queued); Triton '
              f'launches stubbed: {stub:.2f} ms/pass ({queued_stub:.2f} queued)')
        total = 0.0
        for (_, name), counter in zip(modules, counters):
            if counter.launches:
                launches = counter.launches / (args.passes + 5)
                us = counter.seconds / counter.launches * 1e6
                total += launches * us / 1e3
                print(f'  {name}: {launches:.0f} launches/pass, {us:.1f} us host each')
        print(f'  Triton launches: {total:.2f} ms/pass of host time')
    with torch.inference_mode():
        a = torch.randn(64, 64, device='cuda', dtype=torch.bfloat16)
        for label, op in (('torch.add', lambda: a + a), ('F.linear', lambda: torch.nn.functional.linear(a, a)),
                          ('transpose (view)', lambda: a.transpose(0, 1))):
            queued, _ = per_pass(op, 2000)
            print(f'{label}: {queued * 1e3:.1f} us host per call')


if __name__ == '__main__':
    main()
