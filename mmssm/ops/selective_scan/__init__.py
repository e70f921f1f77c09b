"""The selective-scan operator shared by every mmssm backbone (see docs/discretization.md for the math)."""
import os

import torch
import torch.nn.functional as F

from .discretize import METHODS, NEIGHBOURS, ORDER, STABILITY_BOUNDARY, check_method, discretize
from .naive import selective_scan_naive
from .torch_scan import SelectiveScanTorch, no_autocast

__all__ = ['selective_scan', 'selective_scan_bidirectional', 'selective_scan_naive', 'discretize', 'METHODS',
           'BACKENDS', 'NEIGHBOURS', 'ORDER', 'STABILITY_BOUNDARY', 'available_backends']

BACKENDS = ('torch', 'triton', 'cuda')
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _extension_available() -> bool:
    try:
        from . import cuda_scan
    except ImportError:
        return False
    return cuda_scan.is_available()


def available_backends(device) -> list:
    """The backends that can run on ``device``, fastest first: on CUDA the compiled extension (when built), then
    Triton, then torch; elsewhere torch."""
    device = torch.device(device)
    if device.type != 'cuda':
        from . import triton_scan
        # under TRITON_INTERPRET=1 (kernel tests without a GPU) Triton runs on CPU tensors, when asked for
        return ['torch', 'triton'] if triton_scan._interpreting() and device.type == 'cpu' else ['torch']
    backends = []
    if _extension_available():
        backends.append('cuda')
    from . import triton_scan
    if triton_scan.is_available():
        backends.append('triton')
    return backends + ['torch']


def _build_hint(backend: str) -> str:
    if backend == 'cuda':
        try:
            from .cuda_scan import BUILD_HINT
        except ImportError:
            BUILD_HINT = 'MMSSM_BUILD_CUDA=1 pip install --no-build-isolation -e .'
        return f'Build the extension ({BUILD_HINT}), or use backend="triton", "torch" or "auto".'
    if backend == 'triton':
        return ('The triton backend needs a CUDA device and the triton package (pip install triton; it comes with '
                'CUDA builds of torch); use backend="torch" or "auto" elsewhere.')
    return ''


def _unsupported(backend: str, u, B, A, C=None):
    """Why ``backend`` cannot compute this call (None if it can): the compiled backends keep float64 for the
    torch path, and the CUDA kernels take B and C in one dtype, at most 32 states and 65535 batch elements."""
    if backend == 'torch':
        return None
    if u.dtype == torch.float64:
        return 'float64 inputs run on the torch backend only'
    if backend == 'cuda':
        from .cuda_scan import unsupported_reason
        return unsupported_reason(u, B, A, C)
    return None


def _resolve_backend(backend: str, u, B, A, C=None) -> str:
    device = u.device
    if backend == 'auto':
        backend = os.environ.get('MMSSM_SCAN_BACKEND', 'auto') or 'auto'
        source = 'MMSSM_SCAN_BACKEND'
    else:
        source = 'backend'
    if backend == 'auto':
        for candidate in available_backends(device):
            if _unsupported(candidate, u, B, A, C) is None:
                return candidate
    if backend not in BACKENDS:
        raise ValueError(f"{source} must be 'auto' or one of {BACKENDS}, got {backend!r}.")
    if backend not in available_backends(device):
        raise RuntimeError(
            f"{source}={backend!r} is not available for tensors on {device} (available: "
            f"{available_backends(device)}). {_build_hint(backend)}")
    reason = _unsupported(backend, u, B, A, C)
    if reason is not None:
        raise ValueError(f"{source}={backend!r} cannot run this call: {reason}. Use backend='auto' to pick one "
                         "that can.")
    return backend


def _check_inputs(u, delta, A, B, C, D, z, delta_bias):
    tensors = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got {type(tensor).__name__}.')
        if tensor.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f'{name} must have a floating dtype (one of float16, bfloat16, float32, float64; A real, not '
                f'complex), got {tensor.dtype}.')
        if tensor.device != u.device:
            raise ValueError(f'{name} is on {tensor.device} but u is on {u.device}; move all inputs to one device.')
    if u.dim() != 3:
        raise ValueError(f'u must have shape (batch, dim, L), got {tuple(u.shape)}.')
    batch, dim, length = u.shape
    if length == 0:
        raise ValueError(f'u must have at least one step (L >= 1), got shape {tuple(u.shape)}.')
    for name in ('delta', 'z'):
        tensor = tensors[name]
        if tensor is not None and tensor.shape != u.shape:
            raise ValueError(f'{name} must have the shape of u {tuple(u.shape)}, got {tuple(tensor.shape)}.')
        if tensor is not None and tensor.dtype != u.dtype:
            raise ValueError(f'{name} must have the dtype of u ({u.dtype}), got {tensor.dtype}.')
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f'A must have shape (dim, N) = ({dim}, N), got {tuple(A.shape)}.')
    state = A.shape[1]
    layouts = {}
    for name in ('B', 'C'):
        tensor = tensors[name]
        if tensor.dim() == 3:
            groups = 1
            ok = tensor.shape == (batch, state, length)
        elif tensor.dim() == 4:
            groups = tensor.shape[1]
            ok = tensor.shape[0] == batch and tensor.shape[2:] == (state, length) and groups > 0 \
                and dim % groups == 0
        else:
            ok = False
        if not ok:
            raise ValueError(
                f'{name} must have shape (batch, N, L) = ({batch}, {state}, {length}) or (batch, groups, N, L) '
                f'with groups dividing dim={dim}, got {tuple(tensor.shape)}.')
        if tensor.dtype not in (u.dtype, torch.float32):
            raise ValueError(f'{name} must have the dtype of u ({u.dtype}) or float32, got {tensor.dtype}.')
        layouts[name] = groups
    if layouts['B'] != layouts['C']:
        raise ValueError(
            f"B and C must have one group layout (the same number of groups), got B {tuple(B.shape)} "
            f"({layouts['B']} groups) and C {tuple(C.shape)} ({layouts['C']} groups); give both as (batch, N, L) "
            'or both as (batch, groups, N, L) with the same groups.')
    for name in ('D', 'delta_bias'):
        tensor = tensors[name]
        if tensor is not None and tensor.shape != (dim,):
            raise ValueError(f'{name} must have shape (dim,) = ({dim},), got {tuple(tensor.shape)}.')


def _selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, reverse,
                          chunk_size):
    with no_autocast(u.device):  # float32 math under autocast too (SelectiveScanTorch guards its own backward)
        return _selective_scan_torch_fp32(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization,
                                          reverse, chunk_size)


def _selective_scan_torch_fp32(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, reverse,
                               chunk_size):
    compute_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    delta = delta.to(compute_dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute_dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    B = B if B.dim() == 4 else B.unsqueeze(1)
    C = C if C.dim() == 4 else C.unsqueeze(1)
    u_time, delta_time, B_time, C_time = (t.to(compute_dtype).movedim(-1, 0) for t in (u, delta, B, C))
    if reverse:
        u_time, delta_time, B_time, C_time = (t.flip(0) for t in (u_time, delta_time, B_time, C_time))
    y, last_state = SelectiveScanTorch.apply(
        u_time.contiguous(), delta_time.contiguous(), A.to(compute_dtype), B_time.contiguous(),
        C_time.contiguous(), discretization, chunk_size)
    if reverse:
        y = y.flip(0)
    y = y.movedim(0, -1)
    if D is not None:
        y = y + u.to(compute_dtype) * D.to(compute_dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute_dtype))
    return y.to(u.dtype).contiguous(), last_state


def _compiled_arguments(u, delta, A, B, C, D, delta_bias, backend):
    """The per-direction tensors of the GPU backends; absent D and delta_bias become zeros. The CUDA extension
    takes contiguous tensors; Triton reads any strides (a model's channels-last activations without a copy)."""
    dim = u.shape[1]
    B = B if B.dim() == 4 else B.unsqueeze(1)
    C = C if C.dim() == 4 else C.unsqueeze(1)
    zeros = None
    if D is None or delta_bias is None:
        zeros = u.new_zeros(dim, dtype=torch.float32)
    D = zeros if D is None else D.float()
    delta_bias = zeros if delta_bias is None else delta_bias.float()
    if backend == 'triton':
        return u, delta, A.float().contiguous(), B, C, D.contiguous(), delta_bias.contiguous()
    return (u.contiguous(), delta.contiguous(), A.float().contiguous(), B.contiguous(), C.contiguous(),
            D.contiguous(), delta_bias.contiguous())


def _gate(z, backend):
    return z if backend == 'triton' else z.contiguous()


def check_keep_mask(keep_mask, u):
    """The (batch, L) bool keep mask of a pruned scan, validated; None stays None."""
    if keep_mask is None:
        return None
    if not isinstance(keep_mask, torch.Tensor) or keep_mask.dtype != torch.bool:
        raise ValueError(f'keep_mask must be a bool tensor of shape (batch, L), got '
                         f'{getattr(keep_mask, "dtype", type(keep_mask).__name__)}.')
    expected = (u.shape[0], u.shape[-1])
    if tuple(keep_mask.shape) != expected:
        raise ValueError(f'keep_mask must have shape (batch, L) = {expected}, got {tuple(keep_mask.shape)}.')
    if keep_mask.device != u.device:
        raise ValueError(f'keep_mask is on {keep_mask.device} but u is on {u.device}; move it to u\'s device.')
    return keep_mask


def _masked_input(u, keep_mask):
    """u with the pruned positions zeroed: their forcing B u, and so every input term that reads them, is 0.
    A multiply by exactly 1 elsewhere, so an all-True mask changes no bit."""
    return u * keep_mask.unsqueeze(1).to(u.dtype)


def _masked_output(y, keep_mask):
    return y * keep_mask.unsqueeze(1).to(y.dtype)


def check_gap_steps(gap_steps, delta, discretization):
    """gap_steps validated against delta (batch, dim, L) and the method."""
    if discretization != 'zoh':
        raise ValueError(f"gap_steps is defined for discretization='zoh' only (its decay over a gap is exact "
                         f"there), got {discretization!r}; use keep_mask at full length for the other methods.")
    expected = (delta.shape[0], delta.shape[-1])
    if not isinstance(gap_steps, torch.Tensor) or not gap_steps.is_floating_point() \
            or tuple(gap_steps.shape) != expected or gap_steps.device != delta.device:
        raise ValueError(f'gap_steps must be a float tensor of shape (batch, L) = {expected} on {delta.device}, got '
                         f'{getattr(gap_steps, "shape", type(gap_steps).__name__)}.')


def gap_form(delta, B, delta_bias, delta_softplus, gap_steps, discretization='zoh'):
    """``gap_steps`` as a plain zoh scan's arguments: step (1 + g_t) delta_t and B_t / (1 + g_t), so the decay is
    exp((1 + g_t) x_t) and the input term delta_t B_t u_t is unchanged (u, D and z untouched, so the kernels apply
    them). delta (batch, dim, L), B (batch, N, L) or (batch, groups, N, L), gap_steps (batch, L), any strides.
    -> (step, B) in their dtypes, to scan with delta_softplus=False and no delta_bias; the step is computed in
    float32 (float64 for float64) before its cast."""
    check_gap_steps(gap_steps, delta, discretization)
    compute_dtype = torch.float64 if delta.dtype == torch.float64 else torch.float32
    step = delta.to(compute_dtype)
    if delta_bias is not None:
        step = step + delta_bias.to(compute_dtype)[:, None]
    if delta_softplus:
        step = F.softplus(step)
    scale = 1.0 + gap_steps.to(compute_dtype)
    step = (step * scale.unsqueeze(1)).to(delta.dtype)
    inverse = scale.reciprocal().to(B.dtype)
    B = B * (inverse[:, None, None] if B.dim() == 4 else inverse[:, None])
    return step, B


def _kernel_gaps(backend, gaps, tensors, u, delta, A, B, C, discretization):
    """(backend, gaps): where the Triton kernel can take gap_steps, a direct inference call of the Triton backend
    (asked for, or under 'auto' where it runs: no gap_form passes beats any backend's plain scan), ('triton', the
    validated gaps); else (backend, None), and gap_form runs."""
    from .compiled import kernel_direct
    requested = (os.environ.get('MMSSM_SCAN_BACKEND') or 'auto') if backend == 'auto' else backend
    if requested not in ('auto', 'triton') or not kernel_direct('triton', [t for t in tensors if t is not None]):
        return backend, None
    if requested == 'auto' and ('triton' not in available_backends(u.device)
                                or _unsupported('triton', u, B, A, C) is not None):
        return backend, None
    _resolve_backend('triton', u, B, A, C)  # its error where Triton cannot run this call
    for gap in gaps:
        check_gap_steps(gap, delta, discretization)
    return 'triton', list(gaps)


def _gap_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, reverse, backend, chunk_size,
              gap_steps):
    """selective_scan with ``gap_steps``, as the plain scan of :func:`gap_form`."""
    delta, B = gap_form(delta, B, delta_bias, delta_softplus, gap_steps, discretization)
    return selective_scan(u, delta, A, B, C, D=D, z=z, delta_softplus=False, discretization='zoh', reverse=reverse,
                          return_last_state=True, backend=backend, chunk_size=chunk_size)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = True,
                   discretization: str = 'zoh', reverse: bool = False, return_last_state: bool = False,
                   backend: str = 'auto', chunk_size: int | None = None,
                   keep_mask: torch.Tensor | None = None, gap_steps: torch.Tensor | None = None):
    """Selective scan of Mamba, with a choice of discretization.

    For every batch b, channel d and state n, with delta_t = softplus(delta + delta_bias) (or delta as given when
    ``delta_softplus`` is False) and x_t = delta_t * A[d, n]::

        h_t = A_bar(x_t) h_{t-1} + delta_t * sum_j W_j(x_t) B_{t-j}[n] u_{t-j}
        y_t = sum_n C_t[n] h_t[n] + D[d] u_t,        then y_t *= silu(z_t)

    ``discretization='zoh'`` is exactly Mamba's (A_bar = exp(x), W_0 = 1). The others are in
    docs/discretization.md. With ``reverse=True`` the scan runs from the last step to the first, and "earlier"
    samples are the later ones.

    Args:
        u: (batch, dim, L) input; float16, bfloat16, float32 or float64. The state is kept in float32 (float64
            for float64 inputs).
        delta: (batch, dim, L) step sizes before ``delta_bias`` and softplus; u's dtype.
        A: (dim, N) real state matrix diagonal; negative for a stable system.
        B, C: (batch, N, L), or (batch, groups, N, L) shared by dim // groups consecutive channels; u's dtype or
            float32.
        D: optional (dim,) skip connection.
        z: optional (batch, dim, L) gate; the output is multiplied by silu(z).
        delta_bias: optional (dim,) added to delta before softplus.
        delta_softplus: apply softplus to delta (after delta_bias).
        discretization: one of 'zoh', 'foh', 'bilinear', 'poly', 'highorder', 'rk4'.
        reverse: scan from the end of the sequence to its start.
        return_last_state: also return the final state (batch, dim, N), float32.
        backend: 'auto', 'torch', 'triton' or 'cuda'; 'auto' takes the fastest available for the device
            (environment variable MMSSM_SCAN_BACKEND overrides it).
        chunk_size: steps per chunk of the torch path (default: sized to stay in cache).
        keep_mask: optional (batch, L) bool; False marks a pruned token (ToP-ViM's hidden-state alignment).
            There the state only decays, h_t = A_bar(x_t) h_{t-1}, with that position's own delta, and y_t = 0
            (no C h, no D u, whatever z is), so the kept tokens keep their position gaps. The rule for every
            method: the forcing v = B u of a pruned position is 0, so a method that reads earlier samples
            (foh, bilinear, poly, highorder, rk4) takes 0 for a pruned neighbour. None or all-True gives the
            dense scan bit for bit. Works on every backend (it zeroes u and y around the kernel).
        gap_steps: optional (batch, L) float, zoh only: the compact form of the same alignment, for a scan over
            the kept tokens alone. g_t pruned steps precede step t (in the scan's direction) and each is taken to
            have step t's own delta, so h_t = exp((1 + g_t) x_t) h_{t-1} + delta_t B_t u_t; this equals the
            keep_mask scan at full length whose pruned positions carry the next kept token's delta. Runs as the
            zoh scan of :func:`gap_form` (step (1 + g) delta_t, B_t / (1 + g)), any backend.

    Returns:
        y (batch, dim, L) in u's dtype, or (y, last_state) with ``return_last_state``.

    Example:
        >>> import torch
        >>> from mmssm.ops.selective_scan import selective_scan
        >>> u, delta, z = torch.randn(2, 8, 50), torch.randn(2, 8, 50), torch.randn(2, 8, 50)
        >>> A = -torch.rand(8, 16) - 0.5
        >>> B, C = torch.randn(2, 16, 50), torch.randn(2, 16, 50)
        >>> y = selective_scan(u, delta, A, B, C, D=torch.ones(8), z=z, discretization='bilinear')
        >>> y.shape
        torch.Size([2, 8, 50])
    """
    check_method(discretization)
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    keep_mask = check_keep_mask(keep_mask, u)
    if keep_mask is not None:
        y, last_state = selective_scan(
            _masked_input(u, keep_mask), delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
            delta_softplus=delta_softplus, discretization=discretization, reverse=reverse, return_last_state=True,
            backend=backend, chunk_size=chunk_size, gap_steps=gap_steps)
        y = _masked_output(y, keep_mask)
        return (y, last_state) if return_last_state else y
    kernel_gaps = None
    if gap_steps is not None:
        backend, kernel_gaps = _kernel_gaps(backend, [gap_steps], (u, delta, A, B, C, D, z, delta_bias), u, delta,
                                            A, B, C, discretization)
        if kernel_gaps is None:
            y, last_state = _gap_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization, reverse,
                                      backend, chunk_size, gap_steps)
            return (y, last_state) if return_last_state else y
    backend = _resolve_backend(backend, u, B, A, C)
    if backend == 'torch':
        y, last_state = _selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, discretization,
                                              reverse, chunk_size)
    else:
        from .compiled import scan
        arguments = [[t] for t in _compiled_arguments(u, delta, A, B, C, D, delta_bias, backend)]
        out, last = scan(backend, *arguments, [_gate(z, backend)] if z is not None else [], bool(delta_softplus),
                         discretization, [bool(reverse)], gap=kernel_gaps)
        y, last_state = out[0], last[0]
    return (y, last_state) if return_last_state else y


_REQUIRED = ('u', 'delta', 'A', 'B', 'C')


def _pair(name, value, allow_single=False):
    if value is None:
        return None, None
    if isinstance(value, torch.Tensor):
        if allow_single:
            return value, value
        raise ValueError(f'{name} must be a pair (forward, backward) of tensors, got a single tensor.')
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f'{name} must be a pair (forward, backward), got {type(value).__name__} '
                         f'of length {len(value) if hasattr(value, "__len__") else "?"}.')
    if name in _REQUIRED and any(v is None for v in value):
        missing = 'forward' if value[0] is None else 'backward'
        raise ValueError(f'{name} must be given for both directions, got None for the {missing} one.')
    return tuple(value)


def _one_launch_layout(pairs, z_pair) -> bool:
    """Whether both directions fit one launch of a compiled backend: u, delta, B, C of one shape and dtype, A of
    one shape, and z in both or neither (a D or delta_bias missing on one side is zeros there)."""
    for name, pair in zip(_REQUIRED, pairs):
        if pair[0].shape != pair[1].shape or (name != 'A' and pair[0].dtype != pair[1].dtype):
            return False
    return (z_pair[0] is None) == (z_pair[1] is None)


def selective_scan_bidirectional(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                                 discretization='zoh', return_last_state=False, backend='auto',
                                 chunk_size=None, keep_mask=None, gap_steps=None):
    """A forward and a reversed selective scan with separate parameters, as in a bidirectional (Vim) block.

    Each of u, delta, A, B, C, D and delta_bias is a pair (forward, backward) of the arguments of
    :func:`selective_scan`; z is one tensor shared by both directions or a pair. D, z and delta_bias may be None,
    or a pair with None for a direction that goes without. Both outputs are in the input's token order: the
    backward one at step t summarizes steps t..L-1.

    ``keep_mask`` (batch, L) bool is :func:`selective_scan`'s, shared by both directions (a pruned token is
    pruned in both). ``gap_steps`` is a pair (forward, backward) of (batch, L): the backward one counts the
    pruned steps after each token in token order.

    Returns:
        (y_forward, y_backward), or ((y_forward, y_backward), (last_forward, last_backward)) with
        ``return_last_state``; a backward last state is the state after step 0.
    """
    if keep_mask is not None:
        u_pair = _pair('u', u)
        keep_mask = check_keep_mask(keep_mask, u_pair[0])
        outputs, lasts = selective_scan_bidirectional(
            tuple(_masked_input(t, keep_mask) for t in u_pair), delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
            delta_softplus=delta_softplus, discretization=discretization, return_last_state=True,
            backend=backend, chunk_size=chunk_size, gap_steps=gap_steps)
        outputs = tuple(_masked_output(y, keep_mask) for y in outputs)
        return (outputs, lasts) if return_last_state else outputs
    pairs = [_pair(name, value) for name, value in
             (('u', u), ('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D), ('delta_bias', delta_bias))]
    z_pair = _pair('z', z, allow_single=True)
    check_method(discretization)
    for direction in (0, 1):
        args = [pair[direction] for pair in pairs]
        _check_inputs(*args[:6], z_pair[direction], args[6])
    if pairs[0][0].shape != pairs[0][1].shape or pairs[0][0].dtype != pairs[0][1].dtype:
        raise ValueError(f'u of both directions must have one shape and dtype, got {tuple(pairs[0][0].shape)} '
                         f'{pairs[0][0].dtype} and {tuple(pairs[0][1].shape)} {pairs[0][1].dtype}.')
    kernel_gaps, gap_pair = None, _pair('gap_steps', gap_steps)
    if gap_steps is not None:
        backend, kernel_gaps = _kernel_gaps(backend, gap_pair, [*sum(pairs, ()), *z_pair],
                                            *[pairs[i][0] for i in range(5)], discretization)
    if gap_steps is not None and kernel_gaps is None:  # as plain scans (gap_form), still one launch
        forms = [gap_form(pairs[1][d], pairs[3][d], pairs[6][d], delta_softplus, gap, discretization)
                 for d, gap in enumerate(gap_pair)]
        pairs[1], pairs[3] = tuple(f[0] for f in forms), tuple(f[1] for f in forms)
        pairs[6], delta_softplus = (None, None), False
    chosen = [_resolve_backend(backend, pairs[0][d], pairs[3][d], pairs[2][d], pairs[4][d]) for d in (0, 1)]
    if chosen[0] != 'torch' and chosen[0] == chosen[1] and _one_launch_layout(pairs[:5], z_pair):
        # both directions in one launch
        from .compiled import scan
        arguments = [_compiled_arguments(*[pair[d] for pair in pairs], chosen[0]) for d in (0, 1)]
        lists = [[arguments[0][i], arguments[1][i]] for i in range(7)]
        zs = [_gate(t, chosen[0]) for t in z_pair] if z_pair[0] is not None else []
        out, last = scan(chosen[0], *lists, zs, bool(delta_softplus), discretization, [False, True], gap=kernel_gaps)
        outputs, lasts = (out[0], out[1]), (last[0], last[1])
        return (outputs, lasts) if return_last_state else outputs
    results = []
    for direction in (0, 1):
        args = [pair[direction] for pair in pairs]
        results.append(selective_scan(
            *args[:5], D=args[5], z=z_pair[direction], delta_bias=args[6], delta_softplus=delta_softplus,
            discretization=discretization, reverse=direction == 1, return_last_state=True, backend=backend,
            chunk_size=chunk_size, gap_steps=None if kernel_gaps is None else kernel_gaps[direction]))
    outputs = (results[0][0], results[1][0])
    if return_last_state:
        return outputs, (results[0][1], results[1][1])
    return outputs
