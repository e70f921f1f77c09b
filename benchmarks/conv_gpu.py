"""The mixers' short depthwise convolution + SiLU on a GPU, both directions: the channels-last Triton op
(``conv1d_channels_last``) against cuDNN's depthwise conv1d on the transposed (batch, dim, L) layout, forward and
forward + backward, and the Triton backward's kernels one by one (torch.profiler).

    python benchmarks/conv_gpu.py --shapes 128,197,384 8,4096,384 --dtype bf16
"""
import argparse
import sys

import torch

sys.path.insert(0, '.')
from mmssm.ops.causal_conv1d import conv1d_channels_last, conv1d_reference  # noqa: E402


def timed(fn, repeats=50):
    """Median ms per call of ``fn`` (CUDA events, after a warm-up)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def kernel_times(fn, passes=10):
    """ms per call of each CUDA kernel ``fn`` launches."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(passes):
            fn()
        torch.cuda.synchronize()
    kernels = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] = kernels.get(event.name, 0.0) + event.device_time / passes / 1e3
    return kernels


def measure(batch, length, dim, dtype, label):
    xz = torch.randn(batch, length, 2 * dim, device='cuda', dtype=dtype, requires_grad=True)
    weights = [torch.randn(dim, 1, 4, device='cuda', dtype=dtype, requires_grad=True) for _ in range(2)]
    biases = [torch.randn(dim, device='cuda', dtype=dtype, requires_grad=True) for _ in range(2)]
    params = [xz, *weights, *biases]
    grad = torch.randn(2, batch, length, dim, device='cuda', dtype=dtype)

    def triton_fwd():
        return conv1d_channels_last([xz[..., :dim]] * 2, weights, biases, ['causal', 'reverse'], 'silu')

    def cudnn_fwd():
        x = xz[..., :dim].transpose(1, 2).contiguous()
        return torch.stack([conv1d_reference(x, w, b, p, 'silu') for w, b, p in
                            zip(weights, biases, ('causal', 'reverse'))])

    def both(fwd, g):
        def step():
            torch.autograd.grad(fwd(), params, g)
        return step

    with torch.no_grad():
        fwd_t, fwd_c = timed(triton_fwd), timed(cudnn_fwd)
    step_t, step_c = timed(both(triton_fwd, grad)), timed(both(cudnn_fwd, grad.transpose(2, 3).contiguous()))
    print(f'({batch}, {length}, {dim}) {label}, 2 directions: forward Triton {fwd_t:.3f} ms, cuDNN {fwd_c:.3f} ms; '
          f'forward + backward Triton {step_t:.3f} ms, cuDNN {step_c:.3f} ms')
    for name, ms in sorted(kernel_times(both(triton_fwd, grad)).items(), key=lambda kv: -kv[1])[:6]:
        print(f'    {ms:7.3f} ms  {name[:100]}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shapes', nargs='+', default=['128,197,384', '8,4096,384'], help='batch,L,dim')
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp32'])
    args = parser.parse_args()
    dtype = dict(bf16=torch.bfloat16, fp32=torch.float32)[args.dtype]
    for shape in args.shapes:
        measure(*map(int, shape.split(',')), dtype, args.dtype)


if __name__ == '__main__':
    main()
