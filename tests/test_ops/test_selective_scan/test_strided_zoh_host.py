"""The strided zoh CUDA kernels' own sources (csrc/selective_scan/zoh_strided.cuh) run on the CPU: compiled by the
host C++ compiler against cuda_host/cuda_host.h (a block's threads are std::threads, __syncwarp a barrier of
them), float32, against the float64 loop: outputs, last states and every gradient, on a Vim block's strided
layouts, one and two directions, lengths within, at and past the 32-step chunks, N below 16, with and without
gate, softplus and the last state's gradient. This checks the kernels' indexing, chunking and sums; the GPU's
memory model, bf16 and speed are test_strided_zoh.py's (on a GPU)."""
import os
import shutil
import struct
import subprocess

import pytest
import torch

from mmssm.ops.selective_scan import selective_scan_naive

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
CUDA_INCLUDE = os.path.join(os.environ.get('CUDA_HOME') or '/usr/local/cuda', 'include')
RANK = 3

pytestmark = pytest.mark.skipif(
    shutil.which('g++') is None or not os.path.exists(os.path.join(CUDA_INCLUDE, 'cuda_bf16.h')),
    reason=f'needs g++ and the CUDA headers (cuda_bf16.h) under {CUDA_INCLUDE} (set CUDA_HOME)')


@pytest.fixture(scope='module')
def driver(tmp_path_factory):
    binary = str(tmp_path_factory.mktemp('cuda_host') / 'strided_zoh_host')
    subprocess.run(['g++', '-std=c++20', '-O2', '-pthread', f'-I{CUDA_INCLUDE}', '-I' + os.path.join(HERE, 'cuda_host'),
                    '-I' + os.path.join(ROOT, 'csrc', 'selective_scan'),
                    os.path.join(HERE, 'cuda_host', 'strided_zoh_host.cpp'), '-o', binary],
                   check=True, capture_output=True, timeout=600)
    return binary


def _inputs(batch, dim, length, state, directions, softplus, seed):
    """float64 leaves holding float32 values, in the layouts of a Vim block's matmul outputs."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).float().double()

    leaves = dict(xz=randn(batch, length, 2 * dim))
    for d in range(directions):
        delta = randn(batch, length, dim, scale=0.5)
        leaves.update({f'u{d}': randn(batch, length, dim), f'delta{d}': delta if softplus else delta.abs() + 0.05,
                       f'x_dbl{d}': randn(batch, length, RANK + 2 * state),
                       f'A{d}': (-torch.rand(dim, state, generator=g, dtype=torch.float64) - 0.5).float().double(),
                       f'D{d}': randn(dim), f'bias{d}': randn(dim, scale=0.5)})
    seeds = {f'dout{d}': randn(batch, length, dim) for d in range(directions)}
    seeds.update({f'dlast{d}': randn(batch, dim, state) for d in range(directions)})
    return leaves, seeds


def _run_kernels(driver, tmp_path, leaves, seeds, shape, reverse, softplus, gate, dlast):
    batch, dim, length, state = shape
    directions = len(reverse)
    width = RANK + 2 * state
    header = [batch, dim, length, state, directions, softplus, gate, dlast, reverse[0], reverse[-1],
              length * dim, 1, dim, length * 2 * dim, 1, 2 * dim, length * width, 0, 1, width, RANK, RANK + state,
              batch * length * dim, batch * length * width, batch * length * 2 * dim, dim]
    buffers = []
    for d in range(directions):
        buffers += [leaves[f'u{d}'], leaves[f'delta{d}'], leaves[f'x_dbl{d}'], leaves[f'A{d}'], leaves[f'D{d}'],
                    leaves[f'bias{d}'], seeds[f'dout{d}'], seeds[f'dlast{d}']]
    buffers.append(leaves['xz'])
    source, result = tmp_path / 'in.bin', tmp_path / 'out.bin'
    source.write_bytes(struct.pack(f'{len(header)}q', *header)
                       + b''.join(t.float().contiguous().numpy().tobytes() for t in buffers))
    subprocess.run([driver, str(source), str(result)], check=True, timeout=300)
    flat = torch.frombuffer(bytearray(result.read_bytes()), dtype=torch.float32).double()
    blocks = dim // 32
    sizes = dict(out=(batch, length, dim), last=(batch, dim, state), du=(batch, length, dim),
                 ddelta=(batch, length, dim), dz=(batch, length, dim), dA=(dim, state),
                 dB=(batch, blocks, state, length), dC=(batch, blocks, state, length), dD=(dim,), dbias=(dim,))
    outputs, at = [], 0
    for _ in range(directions):
        one = {}
        for name, size in sizes.items():
            count = torch.Size(size).numel()
            one[name] = flat[at:at + count].view(size)
            at += count
        outputs.append(one)
    assert at == flat.numel()
    return outputs


@pytest.mark.parametrize('length,state,reverse,softplus,gate,dlast', [
    (70, 16, (False, True), True, True, True),
    (197, 16, (False, True), True, True, False),
    (33, 12, (True,), False, False, True),
    (32, 16, (False,), True, True, False),
    (1, 10, (True, False), True, True, True),
])
def test_kernels_match_the_float64_loop(driver, tmp_path, length, state, reverse, softplus, gate, dlast):
    batch, dim = 2, 64
    leaves, seeds = _inputs(batch, dim, length, state, len(reverse), softplus, seed=length + state)
    outputs = _run_kernels(driver, tmp_path, leaves, seeds, (batch, dim, length, state), reverse, softplus, gate,
                           dlast)
    ref = {k: v.clone().requires_grad_() for k, v in leaves.items()}
    checks = []
    for d, out in enumerate(outputs):
        x_dbl = ref[f'x_dbl{d}']
        y, h = selective_scan_naive(
            ref[f'u{d}'].transpose(1, 2), ref[f'delta{d}'].transpose(1, 2), ref[f'A{d}'],
            x_dbl[..., RANK:RANK + state].transpose(1, 2).unsqueeze(1),
            x_dbl[..., RANK + state:].transpose(1, 2).unsqueeze(1), D=ref[f'D{d}'],
            z=ref['xz'][..., dim:].transpose(1, 2) if gate else None, delta_bias=ref[f'bias{d}'],
            delta_softplus=softplus, reverse=reverse[d], return_last_state=True)
        names = [f'u{d}', f'delta{d}', f'x_dbl{d}', f'A{d}', f'D{d}', f'bias{d}'] + (['xz'] if gate else [])
        grads = dict(zip(names, torch.autograd.grad(
            (y, h), [ref[k] for k in names],
            (seeds[f'dout{d}'].transpose(1, 2), seeds[f'dlast{d}'] if dlast else torch.zeros_like(h)))))
        dB, dC = out['dB'].sum(1), out['dC'].sum(1)  # (batch, N, L): over the 32-channel blocks
        checks += [
            (f'out{d}', y.detach(), out['out'].transpose(1, 2)), (f'last{d}', h.detach(), out['last']),
            (f'du{d}', grads[f'u{d}'], out['du']), (f'ddelta{d}', grads[f'delta{d}'], out['ddelta']),
            (f'dA{d}', grads[f'A{d}'], out['dA']), (f'dD{d}', grads[f'D{d}'], out['dD']),
            (f'dbias{d}', grads[f'bias{d}'], out['dbias']),
            (f'dB{d}', grads[f'x_dbl{d}'][..., RANK:RANK + state], dB.transpose(1, 2)),
            (f'dC{d}', grads[f'x_dbl{d}'][..., RANK + state:], dC.transpose(1, 2))]
        if gate:
            checks.append((f'dz{d}', grads['xz'][..., dim:], out['dz']))
    for name, expected, got in checks:
        scale = expected.abs().max().item()
        error = (got - expected).abs().max().item()
        assert error <= 2e-4 * scale + 1e-6, f'{name}: {error:.3g} (scale {scale:.3g})'
