"""Where a Vim (or MambaVision) inference pass or training step spends its GPU time: torch.profiler over a few
passes, kernels grouped by name.

    python benchmarks/profile_vim.py --models vim_t_triton,vim_t_cuda --size 224 --batch 128
    MMSSM_SCAN_BACKEND=triton python benchmarks/profile_vim.py --models mambavision_t --channels-last
    python benchmarks/profile_vim.py --models vim_t_triton --train   # vim_gpu.py's training step

Prints, per model, wall time per pass, GPU busy time per pass (sum of kernel times; a gap to wall time is launch
or Python overhead), and the top kernels by total time with their share and call count per pass; with --host, the
Python functions by their own time (cProfile).
"""
import argparse
import sys
import time

import torch

sys.path.insert(0, '.')
from benchmarks.vim_gpu import build_vim, train_step  # noqa: E402


def python_profile(step, passes, top):
    """The host side: cProfile over ``passes`` calls of ``step``, functions by their own time."""
    import cProfile
    import pstats
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(passes):
        step()
    torch.cuda.synchronize()
    profiler.disable()
    pstats.Stats(profiler).sort_stats('tottime').print_stats(top)


def kernel_totals(step, passes):
    """{kernel name: (total microseconds, calls)} of ``passes`` calls of ``step`` (torch.profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(passes):
            step()
        torch.cuda.synchronize()
    kernels = {}
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        total, calls = kernels.get(event.name, (0.0, 0))
        kernels[event.name] = (total + event.device_time, calls + 1)
    return kernels


def kernel_table(step, batch, passes, top, label):
    """Wall and GPU-busy time per call of ``step`` (one pass of ``batch`` images), and its ``top`` kernels by
    total time."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(passes):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / passes
    kernels = kernel_totals(step, passes)
    busy = sum(t for t, _ in kernels.values()) / passes / 1e3  # ms
    print(f'\n== {label}: wall {wall * 1e3:.2f} ms/pass ({batch / wall:.0f} img/s), '
          f'GPU busy {busy:.2f} ms/pass ({100 * busy / (wall * 1e3):.0f}% of wall)')
    for kernel, (total, calls) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]:
        ms = total / passes / 1e3
        print(f'{ms:8.3f} ms {100 * ms / busy:5.1f}% {calls // passes:5d}x  {kernel[:110]}')


def profile(name, batch, size, passes, top, host, channels_last=False, fuse_conv_bn=False, train=False):
    if name.startswith('mambavision_'):  # benchmarks/mambavision_gpu.py's names (not its _mamba ones)
        from benchmarks.mambavision_gpu import build_model
        model = build_model(name, size, 'cuda')
    else:
        model = build_vim(name, size)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if train:  # vim_gpu.py's step: fp32 weights, bf16 autocast, cross-entropy, fused AdamW
        step = train_step(model.cuda().train().to(memory_format=layout), batch, size, layout)
    else:
        if fuse_conv_bn:
            from mmcv.cnn import fuse_conv_bn as fuse
            fuse(model.eval())
        model = model.cuda().to(torch.bfloat16).eval().to(memory_format=layout)
        x = torch.randn(batch, 3, size, size, device='cuda', dtype=torch.bfloat16).contiguous(memory_format=layout)

        @torch.inference_mode()
        def step():
            model(x)
    mode = 'training step' if train else 'inference'
    kernel_table(step, batch, passes, top, f'{name} {mode} {size}px batch {batch}')
    if host:
        python_profile(step, passes, top)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default='vim_t_triton,vim_t_cuda')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--passes', type=int, default=10)
    parser.add_argument('--top', type=int, default=20)
    parser.add_argument('--host', action='store_true', help='also cProfile the Python side')
    parser.add_argument('--channels-last', action='store_true', help='model and input in torch.channels_last')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fold every BatchNorm into the convolution before it (mmcv.cnn.fuse_conv_bn)')
    parser.add_argument('--train', action='store_true',
                        help='profile training steps (fp32 weights, bf16 autocast, fused AdamW) instead of inference')
    args = parser.parse_args()
    if args.train and args.fuse_conv_bn:
        parser.error('--fuse-conv-bn folds BatchNorm for inference; it does not apply with --train')
    for name in args.models.split(','):
        profile(name, args.batch, args.size, args.passes, args.top, args.host, args.channels_last, args.fuse_conv_bn,
                args.train)


if __name__ == '__main__':
    main()
