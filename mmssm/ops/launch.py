"""Triton kernel launches without Triton's per-launch host work, for the eager hot path.

``kernel[grid](*args)`` on a ``triton.jit`` function binds and specializes every argument in Python and C, hashes a
cache key and builds launch metadata on every call: on the GPU machine's host, 60-114 us a launch of the Vim block's
kernels (docs/benchmarks.md), more than the kernels themselves at small batches. :func:`fast_launch` wraps a jit
function so that its launches look the compiled kernel up by a key of what Triton specializes on (argument dtypes,
16-byte alignment of pointers, integer ranges, divisibility by 16 and equality to 1, constexpr values, launch
options, device) and call its launcher directly. A key seen for the first time, and every launch while something
needs Triton's own path (the interpreter, launch hooks of a profiler, ``MMSSM_FAST_LAUNCH=0``), goes through
``kernel[grid]``, which compiles and caches as usual; the key only reuses what that call returned.

The key is at least as fine as Triton's specialization, so a hit launches the kernel Triton itself would pick.
"""
import os

import torch

try:
    import triton
    from triton import knobs as _knobs
    from triton.compiler.compiler import CompiledKernel
except ImportError:  # pragma: no cover - triton comes with CUDA builds of torch; knobs since Triton 3.4
    triton = None

_INT32 = (-2 ** 31, 2 ** 31 - 1)
_INT64_MAX = 2 ** 63 - 1


def enabled() -> bool:
    """Whether launches may bypass ``kernel[grid]`` (not under the interpreter or with ``MMSSM_FAST_LAUNCH=0``)."""
    return triton is not None and os.environ.get('TRITON_INTERPRET') != '1' \
        and os.environ.get('MMSSM_FAST_LAUNCH', '1') != '0'


def _hooked() -> bool:
    """Whether launch hooks are set (a profiler's): then every launch takes Triton's path, which calls them. Triton
    3.7 keeps them in (possibly empty) HookChains, earlier versions as a function or None."""
    runtime = _knobs.runtime
    return any(hook is not None and getattr(hook, 'calls', True)
               for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook))


def _device() -> int:
    return torch.cuda.current_device()


def _stream(device: int) -> int:
    return torch._C._cuda_getCurrentRawStream(device)  # what Triton launches on


def _spec(value):
    """What Triton's specialization of a non-constexpr argument can depend on (a finer key is still sound)."""
    kind = type(value)
    if kind is int:
        if value == 1:
            return 1
        return (not value & 15, _INT32[0] <= value <= _INT32[1], value <= _INT64_MAX)
    if isinstance(value, torch.Tensor):
        return value.dtype, not value.data_ptr() & 15
    if kind is float:
        return float
    return kind, value  # bool, None and the rest: by value (a TypeError for an unhashable one: Triton's path)


class FastLaunch:
    """A ``triton.jit`` function whose ``[grid](...)`` launches skip Triton's per-call work once a launch of the
    same specialization has been compiled (see the module docstring). Other attributes are the jit function's."""

    def __init__(self, jit):
        self.jit = jit
        params = jit.params
        self.names = [p.name for p in params]
        self.index = {p.name: i for i, p in enumerate(params)}
        self.constexpr = tuple(p.is_constexpr for p in params)
        self.defaults = [p.default for p in params]
        self.kernels = {}
        self.hits = self.misses = 0

    def __getattr__(self, name):
        return getattr(self.jit, name)

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def launch(self, grid, args, kwargs):
        if not enabled() or _hooked() or callable(grid):
            return self.jit[grid](*args, **kwargs)
        values = list(args) + self.defaults[len(args):]
        options = ()
        if kwargs:
            for name, value in kwargs.items():
                position = self.index.get(name)
                if position is None:
                    options += ((name, value),)  # num_warps, num_stages, ...
                else:
                    values[position] = value
        device = _device()
        try:
            key = (device, options) + tuple((v.__class__, v) if c else _spec(v) for v, c in zip(values, self.constexpr))
            kernel = self.kernels.get(key)
        except TypeError:  # an unhashable argument
            return self.jit[grid](*args, **kwargs)
        if kernel is None:
            kernel = self.jit[grid](*args, **kwargs)
            if isinstance(kernel, CompiledKernel):
                self.kernels[key] = kernel
            self.misses += 1
            return kernel
        self.hits += 1
        stream = _stream(device)
        kernel.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1, stream,
                   kernel.function, kernel.packed_metadata, None, None, None, *values)
        return kernel


def fast_launch(fn):
    """Decorator over ``@triton.jit``: see :class:`FastLaunch`. Under the interpreter (``TRITON_INTERPRET=1`` when
    the kernels are defined) it returns ``fn`` as it is."""
    if triton is None or not isinstance(fn, triton.runtime.jit.JITFunction):
        return fn
    return FastLaunch(fn)
