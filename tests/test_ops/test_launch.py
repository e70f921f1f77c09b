"""mmssm.ops.launch: a launch reuses a compiled kernel only for the specialization Triton would give it, and passes
the launcher the arguments in the kernel's order. On the CPU with a recording stand-in for Triton's launch path;
the real launches are compared with Triton's own on a GPU (test_fast_launch_matches_triton_on_gpu)."""
import os
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip('triton')
from triton.compiler.compiler import CompiledKernel  # noqa: E402

from mmssm.ops import launch  # noqa: E402
from mmssm.ops.launch import FastLaunch, fast_launch  # noqa: E402

from ._launch_kernel import add_kernel  # noqa: E402


class _Recorder:
    """Stands in for the jit function's ``[grid](...)``: records the call, returns a CompiledKernel whose launcher
    records too."""

    def __init__(self):
        self.slow, self.fast = [], []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.slow.append((grid, args, kwargs))
            kernel = object.__new__(CompiledKernel)
            kernel._run = lambda *launch_args: self.fast.append(launch_args)
            kernel.function, kernel.packed_metadata = 'function', 'metadata'
            return kernel
        return run


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.delenv('MMSSM_FAST_LAUNCH', raising=False)
    monkeypatch.setattr(launch, '_device', lambda: 0)
    monkeypatch.setattr(launch, '_stream', lambda device: 1234)
    wrapped = fast_launch(add_kernel)
    assert isinstance(wrapped, FastLaunch) and wrapped.arg_names == add_kernel.arg_names
    wrapped.jit = _Recorder()
    return wrapped


def test_hit_passes_every_argument_in_order(fast):
    x, y = torch.zeros(32), torch.zeros(32)
    fast[(3,)](x, y, 32, BLOCK=16, num_warps=2)
    assert len(fast.jit.slow) == 1 and fast.misses == 1 and not fast.jit.fast
    fast[(5, 2)](x, y, 48, BLOCK=16, num_warps=2)  # 48: as 32 for Triton (divisible by 16, int32)
    assert fast.hits == 1 and len(fast.jit.slow) == 1
    grid_x, grid_y, grid_z, stream, function, metadata, launch_metadata, enter, exit_, *values = fast.jit.fast[0]
    assert (grid_x, grid_y, grid_z, stream, function, metadata) == (5, 2, 1, 1234, 'function', 'metadata')
    assert (launch_metadata, enter, exit_) == (None, None, None)
    assert values[0] is x and values[1] is y and values[2:] == [48, 16, 0.5]  # SCALE's default too


@pytest.mark.parametrize('change', ['divisibility', 'one', 'int64', 'alignment', 'dtype', 'constexpr', 'default',
                                    'num_warps'])
def test_a_new_specialization_goes_through_triton(fast, change):
    x, y = torch.zeros(64), torch.zeros(64)
    base = dict(n=32, BLOCK=16, num_warps=2)
    fast[(1,)](x, y, **base)
    args, kwargs = [x, y], dict(base)
    if change == 'divisibility':
        kwargs['n'] = 33
    elif change == 'one':
        kwargs['n'] = 1
    elif change == 'int64':
        kwargs['n'] = 2 ** 33
    elif change == 'alignment':
        args[0] = x[2:]  # 8 bytes on: no longer 16-byte aligned
    elif change == 'dtype':
        args[1] = y.half()
    elif change == 'constexpr':
        kwargs['BLOCK'] = 32
    elif change == 'default':
        kwargs['SCALE'] = 0.25
    else:
        kwargs['num_warps'] = 4
    fast[(1,)](*args, **kwargs)
    assert fast.misses == 2 and fast.hits == 0 and len(fast.jit.slow) == 2
    fast[(1,)](*args, **kwargs)
    assert fast.hits == 1


def test_int_bool_and_float_of_equal_value_are_different_keys(fast):
    """1, True and 1.0 are equal (and hash equal) in Python; Triton compiles each differently, as an argument and
    as a constexpr."""
    x, y = torch.zeros(32), torch.zeros(32)
    for n in (1, True, 1.0, 1):
        fast[(1,)](x, y, n, BLOCK=16)
    assert fast.misses == 3 and fast.hits == 1
    for scale in (1, True, 1.0, 1):
        fast[(1,)](x, y, 32, BLOCK=16, SCALE=scale)
    assert fast.misses == 6 and fast.hits == 2


def test_triton_path_when_disabled_hooked_or_callable_grid(fast, monkeypatch):
    x, y = torch.zeros(32), torch.zeros(32)
    fast[(1,)](x, y, 32, BLOCK=16)
    monkeypatch.setenv('MMSSM_FAST_LAUNCH', '0')
    fast[(1,)](x, y, 32, BLOCK=16)
    monkeypatch.delenv('MMSSM_FAST_LAUNCH')
    fast[lambda meta: (1,)](x, y, 32, BLOCK=16)
    monkeypatch.setattr(launch._knobs.runtime, 'launch_enter_hook', lambda metadata: None)
    fast[(1,)](x, y, 32, BLOCK=16)
    assert len(fast.jit.slow) == 4 and fast.hits == 0


def test_interpreter_keeps_the_plain_function():
    """Kernels defined under TRITON_INTERPRET=1 are Triton's interpreted functions, left unwrapped."""
    code = ('from test_ops._launch_kernel import add_kernel; from mmssm.ops.launch import fast_launch; '
            'assert fast_launch(add_kernel) is add_kernel, type(add_kernel)')
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=os.pathsep.join([root, os.path.join(root, 'tests')]))
    result = subprocess.run([sys.executable, '-c', code], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (compiled Triton launches)')
def test_fast_launch_matches_triton_on_gpu(monkeypatch):
    """The channels-last Vim forward and backward through the fast launches equal those through Triton's own path
    bit for bit, the fast path is taken, and a misaligned input still gets the right kernel."""
    from mmssm.models import Vim
    from mmssm.ops.selective_scan import triton_scan
    torch.manual_seed(0)
    model = Vim('test', img_size=32, patch_size=8, mixer_cfg=dict(scan_backend='triton')).cuda()
    x = torch.randn(2, 3, 32, 32, device='cuda')

    def run():
        model.zero_grad()
        out = model(x)[0]
        out.square().sum().backward()
        return [out.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]

    monkeypatch.setenv('MMSSM_FAST_LAUNCH', '0')
    expected = run()
    monkeypatch.delenv('MMSSM_FAST_LAUNCH')
    run()
    hits = triton_scan._scan_fwd_seq_kernel.hits
    got = run()
    assert triton_scan._scan_fwd_seq_kernel.hits > hits
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    buffer = torch.randn(2 * 5 * 8 + 2, device='cuda')
    a = add_kernel_launch(buffer[2:].view(2, 5, 8))
    b = add_kernel_launch(buffer[2:].clone().view(2, 5, 8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def add_kernel_launch(x):
    wrapped = fast_launch(add_kernel)
    flat = x.reshape(-1)
    out = torch.empty_like(flat)
    for _ in range(2):
        wrapped[(triton.cdiv(flat.numel(), 16),)](flat, out, flat.numel(), BLOCK=16)
    return out


@pytest.mark.skipif(os.environ.get('TRITON_INTERPRET') == '1', reason='kernels defined under the interpreter')
def test_every_launched_kernel_is_wrapped():
    """The kernels the hot path launches go through fast_launch (the kernel_ir tools unwrap them)."""
    from mmssm.ops import causal_conv1d, fused_add_norm
    from mmssm.ops.kernel_ir import scan_kernel_counts
    from mmssm.ops.selective_scan import triton_scan
    kernels = [getattr(causal_conv1d, f'_conv_cl{name}_kernel') for name in ('', '_bwd', '_dx')]
    kernels += [getattr(fused_add_norm, f'_add_norm_{name}_kernel') for name in ('fwd', 'bwd')]
    kernels += [getattr(triton_scan, f'_scan_{name}_kernel') for name in ('fwd_seq', 'bwd_seq', 'combine')]
    assert all(isinstance(kernel, FastLaunch) for kernel in kernels), [type(k) for k in kernels]
    assert scan_kernel_counts('fwd', 32, 1)['exp2'] > 0
