"""The pure-torch selective scan: the CPU default, and correct on any device.

The sequence is processed in chunks along L. Forward keeps, besides the inputs, only the state at the start of
each chunk; backward walks the chunks in reverse, recomputes a chunk's discretization and its states from the
saved start state, runs the reverse-time adjoint recurrence and carries the adjoints back to delta, A, B and u.
A chunk is at least sqrt(L) steps long (longer while its intermediates fit in the cache, see chunk_length), so
what is kept are at most sqrt(L) + 1 (batch, dim, N) start states and a few (chunk, batch, dim, N)
intermediates at a time, never (L, batch, dim, N) ones.

The path computes in float32 (float64 for float64 inputs) whatever autocast is active: a bfloat16 C h matmul
would cost the result three digits and make the eager and compiled kernels disagree.

zoh recomputes its chunk under autograd (its formula is Mamba's, two operations). The other methods use
hand-written derivatives of their weights (discretize(..., derivatives=True)), and process a chunk in one
function per direction: _forward_chunk_kernel (weights, input terms, states, y) and _backward_chunk_kernel
(weights and their derivatives evaluated once, recomputed states, adjoint, every gradient). On the CPU each is
one torch.compile'd call per chunk when the chunk is large enough to gain from it: the recurrences over the few
steps of a chunk are unrolled, so that inductor fuses them with the elementwise work; without a working compiler
the same functions run eagerly, the recurrences in place (see _call_kernel).
"""
import contextlib
import math
import os
import types
import warnings

import torch

from .discretize import NEIGHBOURS, discretize

# Elements in one (chunk, batch, dim, N) intermediate: about 1 MiB in float32, so that a chunk's handful of
# intermediates stays in the CPU's cache.
CHUNK_ELEMENTS = 1 << 18
# Fewest steps per chunk: shorter chunks only add Python overhead per step.
MIN_CHUNK = 8


def chunk_length(batch: int, dim: int, state: int, chunk_size: int | None = None, length: int = 1) -> int:
    """Steps per chunk: ``chunk_size`` when given; else as many as keep a (chunk, batch, dim, N) intermediate
    cache-sized, but at least MIN_CHUNK and sqrt(length), so that the saved chunk-start states (one per chunk)
    stay O(sqrt(L)) (batch, dim, N) tensors for large batch * dim * N."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(MIN_CHUNK, math.isqrt(max(0, length - 1)) + 1, CHUNK_ELEMENTS // max(1, batch * dim * state))


def no_autocast(device: torch.device):
    """A context that turns autocast off on ``device`` (a no-op where autocast does not exist)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _discretized_chunk(discretization, u_halo, delta_chunk, A, B_halo, groups):
    """A_bar and the input term delta_t * sum_j W_j v_{t-j} of one chunk, time-major.

    u_halo: (T + k, batch, dim) and B_halo: (T + k, batch, groups, N) hold the chunk and the k samples before
    it; delta_chunk: (T, batch, dim); A: (dim, N). Returns two (T, batch, groups, dim // groups, N) tensors.
    """
    length, batch, dim = delta_chunk.shape
    state = A.shape[1]
    per_group = dim // groups
    k = u_halo.shape[0] - length
    x = delta_chunk.view(length, batch, groups, per_group, 1) * A.view(groups, per_group, state)
    a_bar, weights = discretize(discretization, x)
    input_term = None
    for j, weight in enumerate(weights):
        # delta_t u_{t-j}, outer product with B_{t-j}
        scaled_u = (delta_chunk * u_halo[k - j:k - j + length]).view(length, batch, groups, per_group, 1)
        term = scaled_u * B_halo[k - j:k - j + length].view(length, batch, groups, 1, state)
        if not isinstance(weight, float) or weight != 1.0:
            term = term * weight
        input_term = term if input_term is None else input_term + term
    return a_bar, input_term


def _input_kernel(discretization, u_halo, delta, A, B_halo):
    """A_bar and the input term delta_t * sum_j W_j v_{t-j} of one chunk of a method other than zoh.

    u_halo: (T + k, batch, groups, per_group) and B_halo: (T + k, batch, groups, N) hold the chunk and the k
    samples before it; delta: (T, batch, groups, per_group); A: (groups, per_group, N). Returns two
    (T, batch, groups, per_group, N) tensors.
    """
    a_bar, weights = discretize(discretization, delta.unsqueeze(-1) * A)
    return a_bar, _input_term(u_halo, delta, B_halo, weights)


def _input_term(u_halo, delta, B_halo, weights):
    """delta_t * sum_j W_j v_{t-j} of _input_kernel, from the weights."""
    length = delta.shape[0]
    k = u_halo.shape[0] - length
    input_term = None
    for j, weight in enumerate(weights):
        # W_j * (delta_t u_{t-j}) outer B_{t-j}
        term = (delta * u_halo[k - j:k - j + length]).unsqueeze(-1) * B_halo[k - j:k - j + length].unsqueeze(-2)
        term = term * weight
        input_term = term if input_term is None else input_term + term
    return input_term


def _gradient_kernel(u_halo, delta, A, B_halo, adjoint, states, h0, discretized):
    """The elementwise part of one chunk's backward for a method other than zoh.

    adjoint is dL/dh_t, states the h_t of the chunk and h0 the state before it. With x = delta A, the input term
    S_t = delta_t U_t, U_t = sum_j W_j(x) v_{t-j}, v_{t-j} = u_{t-j} B_{t-j}, and E = dL/dx
    = adjoint * (A_bar'(x) h_{t-1} + delta_t sum_j W_j'(x) v_{t-j}), returns

    - sum over time and batch of E * delta: the chunk's gradient of A, (groups, per_group, N);
    - sum_n E * A: the part of the gradient of delta that comes through x;
    - per tap j, sum_d delta_t u_{t-j} adjoint W_j: the gradient of B_{t-j} (T, batch, groups, N);
    - per tap j, q_j = sum_n adjoint W_j B_{t-j}: dL/du_{t-j} = delta_t q_j, and sum_j u_{t-j} q_j is the rest of
      the gradient of delta.

    discretized is discretize(method, delta A, derivatives=True). Everything is reduced here, so that (compiled
    with the rest of _backward_chunk_kernel) no (T, batch, dim, N) tensor is returned.
    """
    length = delta.shape[0]
    k = u_halo.shape[0] - length
    a_bar, a_bar_prime, weights, weight_primes = discretized
    previous = torch.cat([h0.unsqueeze(0), states[:-1]])
    slope = None
    taps_grad_B, taps_sum = [], []
    for j, (weight, weight_prime) in enumerate(zip(weights, weight_primes)):
        B_j = B_halo[k - j:k - j + length].unsqueeze(-2)
        forcing = u_halo[k - j:k - j + length].unsqueeze(-1) * B_j
        term = forcing * weight_prime
        slope = term if slope is None else slope + term
        q_tap = adjoint * weight
        taps_sum.append((q_tap * B_j).sum(-1))
        # sum over the channels of a group of delta_t u_{t-j} adjoint W_j: dL/dB_{t-j}
        taps_grad_B.append((q_tap * (delta * u_halo[k - j:k - j + length]).unsqueeze(-1)).sum(-2))
    grad_x = adjoint * (previous * a_bar_prime + delta.unsqueeze(-1) * slope)
    return (grad_x * delta.unsqueeze(-1)).sum((0, 1)), (grad_x * A).sum(-1), taps_grad_B, taps_sum


def _compiling():
    compiler = getattr(torch, 'compiler', None)
    return compiler is not None and compiler.is_compiling()


def _scan(a_bar, input_term, h0):
    """The states h_t = a_bar_t h_{t-1} + input_term_t of a chunk, h_{-1} = h0. Eagerly in place in input_term;
    while compiling out of place, unrolled over the chunk, so that inductor fuses the steps into one loop."""
    if not _compiling():
        return _scan_inplace(a_bar, input_term, h0)
    states, previous = [], h0
    for t in range(input_term.shape[0]):
        previous = input_term[t] + a_bar[t] * previous
        states.append(previous)
    return torch.stack(states)


def _halo_sum(taps, k):
    """sum_j taps[j] shifted to rows k - j .. k - j + T - 1 of a (T + k)-row tensor."""
    if _compiling():
        return sum(torch.nn.functional.pad(tap, (0, 0) * (tap.dim() - 1) + (k - j, j)) for j, tap in enumerate(taps))
    length = taps[0].shape[0]
    total = taps[0].new_zeros((length + k,) + taps[0].shape[1:])
    for j, tap in enumerate(taps):
        total[k - j:k - j + length] += tap
    return total


def _adjoint_recurrence(a_bar, grad_y, C, carry):
    """dL/dh_t = C_t dy_t + A_bar_{t+1} dL/dh_{t+1} backwards over a chunk, and the carry A_bar_0 dL/dh_0 into the
    chunk before; in place eagerly, unrolled while compiling (as _scan)."""
    forcing = grad_y * C.unsqueeze(-2)
    if not _compiling():
        forcing[-1].add_(carry)
        for t in range(forcing.shape[0] - 2, -1, -1):
            forcing[t].addcmul_(a_bar[t + 1], forcing[t + 1])
        return forcing, a_bar[0] * forcing[0]
    adjoints = [forcing[-1] + carry]
    for t in range(forcing.shape[0] - 2, -1, -1):
        adjoints.insert(0, forcing[t] + a_bar[t + 1] * adjoints[0])
    return torch.stack(adjoints), a_bar[0] * adjoints[0]


def _forward_chunk_kernel(discretization, u_halo, delta, A, B_halo, C, h0):
    """One chunk of the forward of a method other than zoh: y (T, batch, groups, per_group) and the last state.
    C: (T, batch, groups, N); h0: the state before the chunk."""
    a_bar, input_term = _input_kernel(discretization, u_halo, delta, A, B_halo)
    states = _scan(a_bar, input_term, h0)
    # the last state is copied, so that keeping it does not keep the chunk's states alive
    if _compiling():  # a reduction that inductor fuses with the states'
        return (states * C.unsqueeze(-2)).sum(-1), states[-1].clone()
    return torch.matmul(states, C.unsqueeze(-1)).squeeze(-1), states[-1].clone()


def _backward_chunk_kernel(discretization, u_halo, delta, A, B_halo, C, grad_y, h0, carry):
    """One chunk of the backward of a method other than zoh, from the state h0 before it and the adjoint carry of
    the state after it: recomputed states, the adjoint, and the gradients of the chunk's u and B halos, delta, A
    and C, and the carry into the chunk before. Compiled, it is one fused call per chunk."""
    length = delta.shape[0]
    k = u_halo.shape[0] - length
    # one evaluation of the weights and their derivatives serves the recomputed states and the gradients
    discretized = discretize(discretization, delta.unsqueeze(-1) * A, derivatives=True)
    a_bar, weights = discretized[0], discretized[2]
    states = _scan(a_bar, _input_term(u_halo, delta, B_halo, weights), h0)
    adjoint, carry = _adjoint_recurrence(a_bar, grad_y, C, carry)
    if _compiling():
        grad_C = (states * grad_y).sum(-2)
    else:
        grad_C = torch.matmul(states.transpose(-1, -2), grad_y).squeeze(-1)
    grad_A, grad_delta, taps_grad_B, taps_sum = _gradient_kernel(u_halo, delta, A, B_halo, adjoint, states, h0,
                                                                 discretized)
    for j, q_sum in enumerate(taps_sum):
        grad_delta = grad_delta + u_halo[k - j:k - j + length] * q_sum
    grad_u_halo = _halo_sum([delta * q_sum for q_sum in taps_sum], k)
    return grad_u_halo, grad_delta, grad_A, _halo_sum(taps_grad_B, k), grad_C, carry


# torch.compile of the two chunk kernels above, on the CPU: fused, they cost little more than zoh's exp. Chunks with
# fewer elements than this stay eager (the kernels are cheap there, and the test suite does not pay for
# compiling). MMSSM_SCAN_COMPILE=0 turns compiling off, =1 compiles at every size.
COMPILE_MIN_ELEMENTS = 1 << 16
_COMPILED = {}
_COMPILE_FAILED = []


def _compile_wanted(tensor, elements):
    setting = os.environ.get('MMSSM_SCAN_COMPILE', 'auto')
    if setting == '0' or _COMPILE_FAILED or tensor.device.type != 'cpu':
        return False
    if setting != '1' and elements < COMPILE_MIN_ELEMENTS:
        return False
    compiler = getattr(torch, 'compiler', None)
    return not (compiler is not None and compiler.is_compiling())  # inside a user's torch.compile: inline


def _compiled_kernel(kernel, discretization, dtype):
    """torch.compile of kernel for one method and dtype. Each gets a copy of the function with its own code
    object, so that dynamo's per-code-object recompile limit counts only the shapes of that one."""
    key = (kernel.__name__, discretization, dtype)
    compiled = _COMPILED.get(key)
    if compiled is None:
        copy = types.FunctionType(kernel.__code__.replace(), kernel.__globals__, kernel.__name__)
        compiled = _COMPILED[key] = torch.compile(copy, dynamic=True, fullgraph=True)
    return compiled


def _call_kernel(kernel, discretization, *tensors, elements):
    """kernel(discretization, *tensors), through torch.compile where wanted; eager if compiling fails."""
    if _compile_wanted(tensors[0], elements):
        try:
            return _compiled_kernel(kernel, discretization, tensors[0].dtype)(discretization, *tensors)
        except Exception as error:  # no C++ compiler, unsupported Python, ...: the eager kernel is the same math
            if 'RecompileLimit' in type(error).__name__:  # this method and dtype met too many shapes: eager for it
                return kernel(discretization, *tensors)
            _COMPILE_FAILED.append(error)
            message = str(error).splitlines()[0] if str(error) else ''
            warnings.warn(f'mmssm selective scan: torch.compile failed ({type(error).__name__}: {message}); '
                          'running its kernels eagerly from now on (correct, slower). Set MMSSM_SCAN_COMPILE=0 '
                          'to skip the attempt.', RuntimeWarning, stacklevel=3)
    return kernel(discretization, *tensors)


def _scan_inplace(a_bar, states, h0):
    """states[t] <- a_bar[t] * states[t-1] + states[t] along dim 0, states[-1] being h0. Returns states."""
    previous = h0
    for t in range(states.shape[0]):
        states[t].addcmul_(a_bar[t], previous)
        previous = states[t]
    return states


def _chunks(length, step, k, device):
    """(start, end, index) of every chunk, in order; index selects the chunk and the k samples before it, the
    samples before the sequence start repeating the first one."""
    return [(start, min(start + step, length),
             torch.arange(start - k, min(start + step, length), device=device).clamp_min_(0))
            for start in range(0, length, step)]


class SelectiveScanTorch(torch.autograd.Function):
    """y_t = sum_n C_t h_t for the recurrence of discretize.py, time-major, in the inputs' dtype (float32 or
    float64).

    Inputs: u, delta (L, batch, dim); A (dim, N); B, C (L, batch, groups, N). Outputs: y (L, batch, dim) and the
    final state (batch, dim, N).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, discretization, chunk_size):
        with no_autocast(u.device):
            return SelectiveScanTorch._forward(ctx, u, delta, A, B, C, discretization, chunk_size)

    @staticmethod
    def backward(ctx, grad_y, grad_last_state):
        # autocast of the thread that calls backward would run the matmuls below in low precision
        with no_autocast(grad_y.device):
            return SelectiveScanTorch._backward(ctx, grad_y, grad_last_state)

    @staticmethod
    def _forward(ctx, u, delta, A, B, C, discretization, chunk_size):
        length, batch, dim = u.shape
        groups, state = B.shape[2], A.shape[1]
        per_group = dim // groups
        k = NEIGHBOURS[discretization]
        step = chunk_length(batch, dim, state, chunk_size, length)
        h = u.new_zeros(batch, groups, per_group, state)
        h_starts = []
        y = u.new_empty(length, batch, dim)
        A_grouped = A.view(groups, per_group, state)
        for start, end, index in _chunks(length, step, k, u.device):
            h_starts.append(h)
            if discretization == 'zoh':
                a_bar, states = _discretized_chunk(discretization, u.index_select(0, index), delta[start:end], A,
                                                   B.index_select(0, index), groups)
                _scan_inplace(a_bar, states, h)
                y[start:end] = torch.matmul(states, C[start:end].unsqueeze(-1)).view(end - start, batch, dim)
                h = states[-1].clone()
            else:
                y_chunk, h = _call_kernel(
                    _forward_chunk_kernel, discretization,
                    u.index_select(0, index).view(-1, batch, groups, per_group),
                    delta[start:end].view(-1, batch, groups, per_group), A_grouped, B.index_select(0, index),
                    C[start:end], h, elements=(end - start) * batch * dim * state)
                y[start:end] = y_chunk.view(end - start, batch, dim)
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(h_starts))
        ctx.discretization, ctx.step = discretization, step
        return y, h.view(batch, dim, state)

    @staticmethod
    def _backward(ctx, grad_y, grad_last_state):
        u, delta, A, B, C, h_starts = ctx.saved_tensors
        discretization, step = ctx.discretization, ctx.step
        length, batch, dim = u.shape
        groups, state = B.shape[2], A.shape[1]
        per_group = dim // groups
        k = NEIGHBOURS[discretization]
        grad_u, grad_delta = torch.zeros_like(u), torch.zeros_like(delta)
        grad_A, grad_B, grad_C = torch.zeros_like(A), torch.zeros_like(B), torch.empty_like(C)
        grad_y = grad_y.contiguous().view(length, batch, groups, per_group, 1)
        # adjoint of the state that flows into the chunk after the current one
        carry = (grad_last_state.reshape(batch, groups, per_group, state).clone()
                 if grad_last_state is not None else u.new_zeros(batch, groups, per_group, state))
        chunks = _chunks(length, step, k, u.device)
        for chunk in range(len(chunks) - 1, -1, -1):
            start, end, index = chunks[chunk]
            h0 = h_starts[chunk]
            if discretization == 'zoh':
                carry = _zoh_chunk_backward(u, delta, A, B, C, grad_y, carry, h0, start, end, index, groups,
                                            grad_u, grad_delta, grad_A, grad_B, grad_C)
            else:
                carry = _chunk_backward(discretization, u, delta, A, B, C, grad_y, carry, h0, start, end, index,
                                        groups, grad_u, grad_delta, grad_A, grad_B, grad_C)
        return grad_u, grad_delta, grad_A, grad_B, grad_C, None, None


def _adjoint(a_bar, states, grad_y_chunk, C_chunk, carry):
    """dL/dh_t = C_t dy_t + A_bar_{t+1} dL/dh_{t+1}, run backwards in time; also the carry into the chunk before
    and the chunk's gradient of C."""
    adjoint = grad_y_chunk * C_chunk.unsqueeze(-2)
    adjoint[-1].add_(carry)
    for t in range(adjoint.shape[0] - 2, -1, -1):
        adjoint[t].addcmul_(a_bar[t + 1], adjoint[t + 1])
    grad_C = torch.matmul(states.transpose(-1, -2), grad_y_chunk).squeeze(-1)
    return adjoint, a_bar[0] * adjoint[0], grad_C


def _zoh_chunk_backward(u, delta, A, B, C, grad_y, carry, h0, start, end, index, groups,
                        grad_u, grad_delta, grad_A, grad_B, grad_C):
    """One chunk of zoh's backward: its two operations recomputed under autograd."""
    with torch.enable_grad():
        u_halo = u.index_select(0, index).requires_grad_()
        B_halo = B.index_select(0, index).requires_grad_()
        delta_chunk = delta[start:end].detach().requires_grad_()
        A_leaf = A.detach().requires_grad_()
        a_bar, input_term = _discretized_chunk('zoh', u_halo, delta_chunk, A_leaf, B_halo, groups)
    with torch.no_grad():
        a_bar_value = a_bar.detach()
        states = _scan_inplace(a_bar_value, input_term.detach().clone(), h0)
        adjoint, carry, grad_C[start:end] = _adjoint(a_bar_value, states, grad_y[start:end], C[start:end], carry)
        previous_states = torch.cat([h0.unsqueeze(0), states[:-1]])
        grad_a_bar = adjoint * previous_states
    grads = torch.autograd.grad((a_bar, input_term), (u_halo, delta_chunk, A_leaf, B_halo),
                                (grad_a_bar, adjoint), allow_unused=True)
    if grads[0] is not None:
        grad_u.index_add_(0, index, grads[0])
    if grads[1] is not None:
        grad_delta[start:end] += grads[1]
    if grads[2] is not None:
        grad_A += grads[2]
    if grads[3] is not None:
        grad_B.index_add_(0, index, grads[3])
    return carry


@torch.no_grad()
def _chunk_backward(discretization, u, delta, A, B, C, grad_y, carry, h0, start, end, index, groups,
                    grad_u, grad_delta, grad_A, grad_B, grad_C):
    """One chunk of the backward of a method other than zoh, with the derivatives of discretize.py."""
    length, (_, batch, dim), state = end - start, u.shape, A.shape[1]
    per_group = dim // groups
    grad_u_halo, grad_delta_chunk, chunk_grad_A, grad_B_halo, grad_C[start:end], carry = _call_kernel(
        _backward_chunk_kernel, discretization, u.index_select(0, index).view(-1, batch, groups, per_group),
        delta[start:end].view(length, batch, groups, per_group), A.view(groups, per_group, state),
        B.index_select(0, index), C[start:end], grad_y[start:end], h0, carry,
        elements=length * batch * dim * state)
    grad_A += chunk_grad_A.view(dim, state)
    grad_delta[start:end] += grad_delta_chunk.view(length, batch, dim)
    grad_u.index_add_(0, index, grad_u_halo.view(-1, batch, dim))
    grad_B.index_add_(0, index, grad_B_halo)
    return carry
