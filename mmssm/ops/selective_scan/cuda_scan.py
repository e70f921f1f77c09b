"""The compiled selective-scan kernels (csrc/selective_scan/), as plain functions over lists of directions.

One call runs one direction or both directions of a bidirectional (Vim) block in a single launch: every
argument that belongs to a direction is a list with one entry per direction. The kernels compute the function of
discretize.py for every method, with float32 math and state, for float32, float16 and bfloat16 inputs.

Getting the extension:

- installed: ``MMSSM_BUILD_CUDA=1 pip install --no-build-isolation -e .`` builds ``mmssm._C``
  (``MMSSM_CUDA_ARCH_LIST``, default ``8.0;9.0``, picks the GPU architectures);
- development checkout: ``python -m mmssm.ops.selective_scan.cuda_scan --build`` compiles it with
  torch.utils.cpp_extension into ``$MMSSM_EXT_DIR`` (default ``~/.cache/mmssm/ext``); later imports load that
  build as long as the sources under csrc/selective_scan/ are unchanged.

The torch.library registration, autograd and backend choice live elsewhere (cuda backend of selective_scan);
this module only calls the kernels.
"""
import argparse
import glob
import hashlib
import importlib.machinery
import importlib.util
import os
import os.path as osp
import sys
import time
import warnings

import torch

from .discretize import METHODS, check_method
from .segments import split_length

BUILD_HINT = ('build the CUDA selective-scan kernels with `MMSSM_BUILD_CUDA=1 pip install --no-build-isolation -e .` '
              '(installs mmssm._C) or, in a development checkout, `python -m mmssm.ops.selective_scan.cuda_scan '
              '--build` (a JIT build cached in $MMSSM_EXT_DIR, default ~/.cache/mmssm/ext)')

JIT_NAME = 'mmssm_selective_scan_ext'
# Steps per chunk of the kernels: the forward saves the state at every chunk start for the backward.
CHUNK = 32
MAX_STATE = 32
MAX_BATCH = 65535  # the batch is the grid's y dimension
# Segment-parallel kernels (long sequences, few sequences): segments of whole chunks, at least MIN_SEGMENT steps,
# when the sequences alone give fewer than SEGMENT_BLOCKS blocks (256 threads; a block holds 512 / N_pad channels in
# the forward, 256 / N_pad in the backward, N_pad the state count padded to 8, 16 or 32). FWD_SEGMENT_L /
# BWD_SEGMENT_L, when set, force the length (tests, benchmarks; one >= L runs the whole sequence per block).
# Both constants swept on an H100: docs/benchmarks.md (2026-12-07).
SEGMENT_BLOCKS = 1024
MIN_SEGMENT = 128
FWD_SEGMENT_L = None
BWD_SEGMENT_L = None

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
_CSRC = osp.join(_ROOT, 'csrc', 'selective_scan')
_UNSET = object()
_EXTENSION = _UNSET


def nvcc_flags():
    """nvcc flags of both builds (setup.py passes the same ones). No -std: torch adds the standard that its headers
    need (C++20 in torch >= 2.10; C++17 there breaks the layout of c10 types)."""
    flags = ['-O3', '--use_fast_math', '-lineinfo', f'--threads={os.environ.get("NVCC_THREADS", "4")}']
    return flags + os.environ.get('MMSSM_NVCC_FLAGS', '').split()  # extra flags, for tuning experiments


def _sources():
    return sorted(glob.glob(osp.join(_CSRC, '*.cpp')) + glob.glob(osp.join(_CSRC, '*.cu')))


def _source_hash():
    digest = hashlib.sha256()
    for path in sorted(glob.glob(osp.join(_CSRC, '*'))):
        digest.update(osp.basename(path).encode())
        with open(path, 'rb') as f:
            digest.update(f.read())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:16]


def build_directory():
    return os.environ.get('MMSSM_EXT_DIR') or osp.join(osp.expanduser('~'), '.cache', 'mmssm', 'ext')


def _jit_library():
    """Path of the JIT-built library when it was built from the current sources, else None."""
    directory = build_directory()
    stamp = osp.join(directory, 'SOURCES_HASH')
    if not osp.exists(stamp) or not osp.isdir(_CSRC):
        return None
    with open(stamp) as f:
        if f.read().strip() != _source_hash():
            warnings.warn(f'mmssm: the CUDA scan extension in {directory} was built from other sources than '
                          f'{_CSRC}; ignoring it ({BUILD_HINT}).', RuntimeWarning, stacklevel=3)
            return None
    for suffix in importlib.machinery.EXTENSION_SUFFIXES + ['.so']:
        path = osp.join(directory, JIT_NAME + suffix)
        if osp.exists(path):
            return path
    return None


def _load_file(path):
    spec = importlib.util.spec_from_file_location(JIT_NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extension():
    """The compiled module (mmssm._C, or the development JIT build), or None when there is neither."""
    global _EXTENSION
    if _EXTENSION is _UNSET:
        module = None
        try:
            from mmssm import _C as module  # noqa: N811
        except ImportError:
            path = _jit_library()
            if path is not None:
                try:
                    module = _load_file(path)
                except (ImportError, OSError) as error:
                    warnings.warn(f'mmssm: could not load the CUDA scan extension {path}: {error} ({BUILD_HINT}).',
                                  RuntimeWarning, stacklevel=2)
        _EXTENSION = module
    return _EXTENSION


def is_available():
    """Whether the compiled kernels can be loaded (a GPU is a separate question)."""
    return extension() is not None


def build(verbose=True):
    """Compile csrc/selective_scan/ with torch.utils.cpp_extension.load into build_directory(); returns the module.

    TORCH_CUDA_ARCH_LIST (or MMSSM_CUDA_ARCH_LIST) picks the architectures: default the visible GPU's, else 8.0;9.0.
    """
    global _EXTENSION
    from torch.utils.cpp_extension import load
    if not _sources():
        raise RuntimeError(f'no CUDA scan sources under {_CSRC}: the build needs a development checkout.')
    arch_list = os.environ.get('MMSSM_CUDA_ARCH_LIST') or os.environ.get('TORCH_CUDA_ARCH_LIST')
    if not arch_list and not torch.cuda.is_available():
        arch_list = '8.0;9.0'
    if arch_list:
        os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list
    directory = build_directory()
    os.makedirs(directory, exist_ok=True)
    stamp = osp.join(directory, 'SOURCES_HASH')
    if osp.exists(stamp):
        os.remove(stamp)
    module = load(name=JIT_NAME, sources=_sources(), extra_include_paths=[_CSRC],
                  extra_cflags=['-O3'], extra_cuda_cflags=nvcc_flags(), build_directory=directory,
                  verbose=verbose)
    with open(stamp, 'w') as f:
        f.write(_source_hash())
    _EXTENSION = module
    return module


def _require():
    module = extension()
    if module is None:
        raise RuntimeError(f'The CUDA selective-scan extension is not built: {BUILD_HINT}.')
    return module


def _optional(values, count, name):
    """A list of count tensors (an empty tensor standing for None) from a list, a list of Nones or []."""
    if values is None or len(values) == 0:
        return []
    if len(values) != count:
        raise ValueError(f'{name} must be a list of {count} entries (one per direction) or empty, got {len(values)}.')
    if all(value is None for value in values):
        return []
    empty = torch.empty(0)
    return [empty if value is None else value for value in values]


def _grouped(tensors):
    """(batch, N, L) -> (batch, 1, N, L); 4-d tensors as they are."""
    return [t.unsqueeze(1) if t.dim() == 3 else t for t in tensors]


def _method_index(method):
    return METHODS.index(check_method(method))


def _lists(u, delta, A, B, C, D, delta_bias, z, reverse):
    count = len(u)
    if isinstance(reverse, bool):
        reverse = [reverse] * count
    return (list(u), list(delta), list(A), _grouped(B), _grouped(C), _optional(D, count, 'D'),
            _optional(delta_bias, count, 'delta_bias'), _optional(z, count, 'z'), [bool(r) for r in reverse])


def _check(u, delta, A, B, C, D, delta_bias, z):
    """The binding's main checks, done here first with the same messages (the binding repeats them)."""
    count = len(u)
    if count not in (1, 2):
        raise RuntimeError('selective_scan (cuda): u must be a list of 1 or 2 tensors (one per direction), '
                           f'got {count}.')
    first = u[0]
    if not first.is_cuda:
        raise RuntimeError(f'selective_scan (cuda): u must be a CUDA tensor, got {first.device}.')
    if first.dim() != 3:
        raise RuntimeError(f'selective_scan (cuda): u must have shape (batch, dim, L), got {tuple(first.shape)}.')
    batch, dim, length = first.shape
    for name, values in (('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D), ('delta_bias', delta_bias),
                         ('z', z)):
        if values and len(values) != count:
            raise RuntimeError(f'selective_scan (cuda): {name} must be a list of {count} tensors (one per direction, '
                               f'as u), got {len(values)}.')
    state = A[0].shape[-1] if A[0].dim() == 2 else -1
    expected = dict(u=(batch, dim, length), delta=(batch, dim, length), z=(batch, dim, length), A=(dim, state),
                    D=(dim,), delta_bias=(dim,))
    for name, values in (('u', u), ('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D),
                         ('delta_bias', delta_bias), ('z', z)):
        for i, tensor in enumerate(values):
            if tensor is None or tensor.numel() == 0 and name in ('D', 'delta_bias', 'z'):
                continue
            label = f'{name}[{i}]' if count > 1 else name
            if tensor.device != first.device:
                raise RuntimeError(f'selective_scan (cuda): {label} must be on {first.device} (the device of u), got '
                                   f'{tensor.device}.')
            if name in expected and tuple(tensor.shape) != expected[name]:
                raise RuntimeError(f'selective_scan (cuda): {label} must have shape {expected[name]}, got '
                                   f'{tuple(tensor.shape)}.')
            if not tensor.is_contiguous():
                raise RuntimeError(f'selective_scan (cuda): {label} must be contiguous, got strides '
                                   f'{tensor.stride()} for shape {tuple(tensor.shape)}.')
            if name in ('A', 'D', 'delta_bias') and tensor.dtype != torch.float32:
                raise RuntimeError(f'selective_scan (cuda): {label} must have dtype Float (kept in float32), got '
                                   f'{tensor.dtype}.')
            if name in ('delta', 'z') and tensor.dtype != first.dtype:
                raise RuntimeError(f'selective_scan (cuda): {label} must have dtype {first.dtype} (that of u), got '
                                   f'{tensor.dtype}.')
    if not 1 <= state <= MAX_STATE:
        raise RuntimeError(f'selective_scan (cuda): the state size N (A.shape[1]) must be between 1 and {MAX_STATE}, '
                           f'got {state}.')
    groups = B[0].shape[1] if B[0].dim() == 4 else 1
    if dim % groups:
        raise RuntimeError(f'selective_scan (cuda): the number of groups of B ({groups}) must divide dim = {dim}.')


def forward(u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, save_for_backward=False):
    """The scan of each direction in one launch.

    u, delta (batch, dim, L), A (dim, N) float32, B, C (batch, groups, N, L) or (batch, N, L), D, delta_bias (dim,)
    float32 (entries may be None): lists with one entry per direction (1 or 2); z a list of the same length or an
    empty list; reverse a list of bools. Returns (out, last_state, saved): lists of (batch, dim, L) in u's dtype,
    (batch, dim, N) float32, and the float32 chunk-start states for backward (empty tensors unless
    save_for_backward).
    """
    ext = _require()
    u, delta, A, B, C, D, delta_bias, z, reverse = _lists(u, delta, A, B, C, D, delta_bias, z, reverse)
    _check(u, delta, A, B, C, D, delta_bias, z)
    batch, dim, length = u[0].shape
    segment = forward_segment_length(batch, dim, len(u), length, A[0].shape[1])  # (>= L: one segment)
    out, last_state, saved = ext.fwd(u, delta, A, B, C, D, delta_bias, z, bool(softplus), _method_index(method),
                                     reverse, bool(save_for_backward), segment)
    return list(out), list(last_state), list(saved)


def backward(dout, u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, saved, dlast_state):
    """Gradients of forward's outputs, for each direction in one launch.

    dout: list of (batch, dim, L) in u's dtype; saved: forward's third result (or an empty list: the states are
    then recomputed); dlast_state: list of (batch, dim, N) float32 adjoints of the last states (entries may be
    None), or an empty list. Returns (du, ddelta, dA, dB, dC, dD, ddelta_bias, dz) as lists: du, ddelta, dz in u's
    dtype, dB, dC in B's dtype and shape, dA, dD, ddelta_bias float32; dD, ddelta_bias, dz hold None where D,
    delta_bias, z were absent (dz is an empty list when z is).
    """
    ext = _require()
    count = len(u)
    B_shapes = [b.shape for b in B]
    C_shapes = [c.shape for c in C]
    u, delta, A, B, C, D, delta_bias, z, reverse = _lists(u, delta, A, B, C, D, delta_bias, z, reverse)
    _check(u, delta, A, B, C, D, delta_bias, z)
    dout = [g.contiguous() for g in dout]
    saved = [] if saved is None or any(s is None or s.numel() == 0 for s in saved) else list(saved)
    dlast = _optional(dlast_state, count, 'dlast_state')
    dlast = [g.contiguous() if g.numel() else g for g in dlast]
    batch, dim, length = u[0].shape
    segment = backward_segment_length(batch, dim, count, length, A[0].shape[1])
    du, ddelta, dA, dB, dC, dD, dbias, dz = ext.bwd(dout, u, delta, A, B, C, D, delta_bias, z, bool(softplus),
                                                    _method_index(method), reverse, saved, dlast, segment)
    dB = [g.view(shape) for g, shape in zip(dB, B_shapes)]
    dC = [g.view(shape) for g, shape in zip(dC, C_shapes)]
    dD = [g if g.numel() else None for g in dD]
    dbias = [g if g.numel() else None for g in dbias]
    dz = [g for g in dz] if z else []
    return list(du), list(ddelta), list(dA), dB, dC, dD, dbias, dz


def main(argv=None):
    parser = argparse.ArgumentParser(description='Build or check the CUDA selective-scan kernels.')
    parser.add_argument('--build', action='store_true', help='compile csrc/selective_scan into $MMSSM_EXT_DIR')
    parser.add_argument('--quiet', action='store_true', help='less compiler output')
    args = parser.parse_args(argv)
    if args.build:
        start = time.time()
        build(verbose=not args.quiet)
        print(f'mmssm: built the CUDA selective-scan extension into {build_directory()} in '
              f'{time.time() - start:.1f} s (TORCH_CUDA_ARCH_LIST={os.environ.get("TORCH_CUDA_ARCH_LIST")}).')
        return 0
    print(f'mmssm CUDA selective scan available: {is_available()}' + ('' if is_available() else f'; {BUILD_HINT}'))
    return 0


def _padded_state(state):
    return 8 if state <= 8 else 16 if state <= 16 else 32


def forward_segment_length(batch, dim, directions, length, state):
    """Steps per segment of the forward kernels (``length``: the whole sequence per block), by
    segments.split_length with the forward's channels per block, SEGMENT_BLOCKS and MIN_SEGMENT (FWD_SEGMENT_L
    forces it)."""
    return split_length('cuda_scan.FWD_SEGMENT_L', FWD_SEGMENT_L, CHUNK, 512 // _padded_state(state), SEGMENT_BLOCKS,
                        MIN_SEGMENT, batch, dim, directions, length)


def backward_segment_length(batch, dim, directions, length, state):
    """Steps per segment of the backward kernels (and of the forward that the backward reruns when it has no saved
    states), as forward_segment_length with the backward's channels per block (BWD_SEGMENT_L forces it)."""
    return split_length('cuda_scan.BWD_SEGMENT_L', BWD_SEGMENT_L, CHUNK, 256 // _padded_state(state), SEGMENT_BLOCKS,
                        MIN_SEGMENT, batch, dim, directions, length)


def saved_shape(batch, dim, length, state, save):
    """Shape of one direction's saved states, as forward returns them (for the custom op's fake impl)."""
    return (batch, -(-length // CHUNK), dim, state) if save else (0,)


def unsupported_reason(u, B, A, C=None):
    """Why these inputs cannot run on the CUDA kernels (None when they can): the kernels read B and C in one
    dtype (u's or float32), and take at most MAX_STATE states and MAX_BATCH batch elements."""
    if A.shape[1] > MAX_STATE:
        return f'the CUDA kernels take at most {MAX_STATE} states, got N={A.shape[1]}'
    if u.shape[0] > MAX_BATCH:
        return f'the CUDA kernels take at most {MAX_BATCH} batch elements, got batch={u.shape[0]}'
    for name, tensor in (('B', B), ('C', C)):
        if tensor is not None and tensor.dtype not in (u.dtype, torch.float32):
            return f'the CUDA kernels take {name} in u\'s dtype ({u.dtype}) or float32, got {tensor.dtype}'
    if C is not None and B.dtype != C.dtype:
        return (f'the CUDA kernels take B and C in one dtype (both {u.dtype} or both float32), got B {B.dtype} '
                f'and C {C.dtype}')
    return None


if __name__ == '__main__':
    sys.exit(main())

