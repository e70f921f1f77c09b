"""The mixers' short depthwise convolution + SiLU on a GPU, both directions: the channels-last Triton op
(``conv1d_channels_last``) against cuDNN's depthwise conv1d on the transposed (batch, dim, L) layout, forward and
forward + backward, and the Triton backward's kernels one by one (torch.profiler).

    python benchmarks/conv_gpu.py --shapes 128,197,384 8,4096,384 --dtype bf16
"""
import argparse
import sys

import torch

sys.path.insert(0, '.')
from benchmarks.profile_vim import kernel_totals  # noqa: E402
from benchmarks.scan_gpu import timed  # noqa: E402
from mmssm.ops.causal_conv1d import conv1d_channels_last, conv1d_reference  # noqa: E402


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

    def ms(fn):
        return timed(fn, repeats=10, rounds=5)

    with torch.no_grad():
        fwd_t, fwd_c = ms(triton_fwd), ms(cudnn_fwd)
    step_t, step_c = ms(both(triton_fwd, grad)), ms(both(cudnn_fwd, grad.transpose(2, 3).contiguous()))
    print(f'({batch}, {length}, {dim}) {label}, 2 directions: forward Triton {fwd_t:.3f} ms, cuDNN {fwd_c:.3f} ms; '
          f'forward + backward Triton {step_t:.3f} ms, cuDNN {step_c:.3f} ms')
    passes = 10
    kernels = kernel_totals(both(triton_fwd, grad), passes)
    for name, (total, _) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:6]:
        print(f'    {total / passes / 1e3:7.3f} ms  {name[:100]}')


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
