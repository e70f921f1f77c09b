"""Build mamba-ssm's selective-scan and causal-conv1d CUDA kernels from their PyPI sdists (for timing them as
peers of mmssm on the same GPU), and patch an mmssm model to run on them.

Only the kernels' C++/CUDA sources are compiled (``torch.utils.cpp_extension.load``, one architecture), not the
whole packages, whose metadata pulls in further dependencies. Nothing here is used by mmssm itself.

    python benchmarks/mamba_kernels.py --sdist-dir .kit/sdist --build-dir /tmp/mamba_build
"""
import argparse
import glob
import os
import os.path as osp
import tarfile
import time

import torch

CUDA_FLAGS = [
    '-O3', '-std=c++17', '-U__CUDA_NO_HALF_OPERATORS__', '-U__CUDA_NO_HALF_CONVERSIONS__',
    '-U__CUDA_NO_BFLOAT16_OPERATORS__', '-U__CUDA_NO_BFLOAT16_CONVERSIONS__', '-U__CUDA_NO_BFLOAT162_OPERATORS__',
    '-U__CUDA_NO_BFLOAT162_CONVERSIONS__', '--expt-relaxed-constexpr', '--expt-extended-lambda', '--use_fast_math',
]


def _unpack(sdist_dir, pattern, build_dir):
    matches = sorted(glob.glob(osp.join(sdist_dir, pattern)))
    if not matches:
        raise FileNotFoundError(f'no sdist matching {pattern} in {sdist_dir}')
    with tarfile.open(matches[-1]) as tar:
        root = tar.getnames()[0].split('/')[0]
        if not osp.isdir(osp.join(build_dir, root)):
            tar.extractall(build_dir, filter='data')
    return osp.join(build_dir, root)


def build(sdist_dir, build_dir, verbose=False, conv=True):
    """Compile both extensions (or only the scan's without ``conv``); returns (selective_scan_cuda,
    causal_conv1d_cuda or None, seconds)."""
    from torch.utils.cpp_extension import load
    os.makedirs(build_dir, exist_ok=True)
    os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '9.0')
    os.environ.setdefault('MAX_JOBS', str(os.cpu_count() or 4))
    start = time.perf_counter()
    mamba_root = _unpack(sdist_dir, 'mamba_ssm-*.tar.gz', build_dir)
    conv_root = _unpack(sdist_dir, 'causal_conv1d-*.tar.gz', build_dir) if conv else None
    scan_dir = osp.join(mamba_root, 'csrc', 'selective_scan')
    scan_sources = [osp.join(scan_dir, 'selective_scan.cpp')] + sorted(glob.glob(osp.join(scan_dir, '*.cu')))
    targets = [('selective_scan_cuda', scan_sources, scan_dir)]
    if conv:
        conv_dir = osp.join(conv_root, 'csrc')
        conv_sources = [osp.join(conv_dir, 'causal_conv1d.cpp')] + sorted(glob.glob(osp.join(conv_dir, '*.cu')))
        targets.append(('causal_conv1d_cuda', conv_sources, conv_dir))
    modules = []
    for name, sources, include in targets:
        target = osp.join(build_dir, name)
        os.makedirs(target, exist_ok=True)
        modules.append(load(name=name, sources=sources, extra_cflags=['-O3', '-std=c++17'],
                            extra_cuda_cflags=CUDA_FLAGS, extra_include_paths=[include], build_directory=target,
                            verbose=verbose))
    return modules[0], modules[1] if conv else None, time.perf_counter() - start


def patch_mixers(scan_cuda, conv_cuda):
    """Make every mmssm MambaMixer run mamba-ssm's kernels, the way the original Vim calls them: the backward
    direction flips the sequence, runs the forward kernels and flips back. Forward (inference) only; zoh only."""
    import mmssm.models.layers.mamba_mixer as mixer_module

    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, discretization='zoh',
             backend='auto', reverse=False):
        if discretization != 'zoh':
            raise ValueError('mamba-ssm kernels implement zoh only')
        if reverse:
            u, delta, B, C, z = (t.flip(-1) if t is not None else None for t in (u, delta, B, C, z))
        B, C = (t.unsqueeze(1) if t.dim() == 3 else t for t in (B, C))  # the kernel takes (batch, groups, N, L)
        out = scan_cuda.fwd(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
                            D, None if z is None else z.contiguous(), delta_bias, delta_softplus)
        y = out[2] if z is not None else out[0]
        return y.flip(-1) if reverse else y

    def bidirectional(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                      discretization='zoh', backend='auto'):
        results = []
        for direction in (0, 1):
            results.append(scan(u[direction], delta[direction], A[direction], B[direction], C[direction],
                                D[direction], z, delta_bias[direction], delta_softplus, discretization,
                                reverse=direction == 1))
        return tuple(results)

    def conv(x, weight, bias=None, activation=None, reverse=False):
        weight = weight.squeeze(1) if weight.dim() == 3 else weight
        if reverse:
            x = x.flip(-1)
        x = x.contiguous()
        out = torch.empty_like(x)
        conv_cuda.causal_conv1d_fwd(x, weight.contiguous(), bias, None, None, out, None, activation == 'silu')
        return out.flip(-1) if reverse else out

    names = ('selective_scan', 'selective_scan_bidirectional', 'causal_conv1d', 'channels_last_path')
    originals = [getattr(mixer_module, name) for name in names]
    mixer_module.selective_scan = scan
    mixer_module.selective_scan_bidirectional = bidirectional
    mixer_module.causal_conv1d = conv
    mixer_module.channels_last_path = lambda *args: False  # the original Vim's transposing mixer

    def restore():
        for name, original in zip(names, originals):
            setattr(mixer_module, name, original)
    return restore


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sdist-dir', default='.kit/sdist')
    parser.add_argument('--build-dir', default='/tmp/mamba_build')
    parser.add_argument('--verbose', action='store_true')
    args = parser.parse_args()
    _, _, seconds = build(args.sdist_dir, args.build_dir, args.verbose)
    print(f'built selective_scan_cuda and causal_conv1d_cuda in {seconds:.0f} s')
