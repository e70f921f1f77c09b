"""The pure-torch selective scan: the CPU default, and correct on any device.

The sequence is processed in chunks along L. Forward keeps, besides the inputs, only the state at the start of
each chunk; backward walks the chunks in reverse, recomputes a chunk's discretization (under autograd, so the
math of every method lives once, in discretize.py) and its states from the saved start state, runs the
reverse-time adjoint recurrence, and lets autograd carry the adjoints back to delta, A, B and u. So at most a
few (chunk, batch, dim, N) intermediates exist at a time, never (L, batch, dim, N) ones.
"""
import torch

from .discretize import NEIGHBOURS, discretize

# Elements in one (chunk, batch, dim, N) intermediate: about 1 MiB in float32, so that a chunk's handful of
# intermediates stays in the CPU's cache.
CHUNK_ELEMENTS = 1 << 18


def chunk_length(batch: int, dim: int, state: int, chunk_size: int | None = None) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, CHUNK_ELEMENTS // max(1, batch * dim * state))


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
        length, batch, dim = u.shape
        groups, state = B.shape[2], A.shape[1]
        per_group = dim // groups
        k = NEIGHBOURS[discretization]
        step = chunk_length(batch, dim, state, chunk_size)
        h = u.new_zeros(batch, groups, per_group, state)
        h_starts = []
        y = u.new_empty(length, batch, dim)
        for start, end, index in _chunks(length, step, k, u.device):
            h_starts.append(h)
            a_bar, states = _discretized_chunk(discretization, u.index_select(0, index), delta[start:end], A,
                                               B.index_select(0, index), groups)
            _scan_inplace(a_bar, states, h)
            y[start:end] = torch.matmul(states, C[start:end].unsqueeze(-1)).view(end - start, batch, dim)
            h = states[-1].clone()
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(h_starts))
        ctx.discretization, ctx.step = discretization, step
        return y, h.view(batch, dim, state)

    @staticmethod
    def backward(ctx, grad_y, grad_last_state):
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
            with torch.enable_grad():
                u_halo = u.index_select(0, index).requires_grad_()
                B_halo = B.index_select(0, index).requires_grad_()
                delta_chunk = delta[start:end].detach().requires_grad_()
                A_leaf = A.detach().requires_grad_()
                a_bar, input_term = _discretized_chunk(discretization, u_halo, delta_chunk, A_leaf, B_halo, groups)
            with torch.no_grad():
                a_bar_value = a_bar.detach()
                h0 = h_starts[chunk]
                states = _scan_inplace(a_bar_value, input_term.detach().clone(), h0)
                grad_y_chunk = grad_y[start:end]
                # dL/dh_t = C_t dy_t + A_bar_{t+1} dL/dh_{t+1}, run backwards in time
                adjoint = grad_y_chunk * C[start:end].unsqueeze(-2)
                adjoint[-1].add_(carry)
                for t in range(end - start - 2, -1, -1):
                    adjoint[t].addcmul_(a_bar_value[t + 1], adjoint[t + 1])
                carry = a_bar_value[0] * adjoint[0]
                previous_states = torch.cat([h0.unsqueeze(0), states[:-1]])
                grad_a_bar = adjoint * previous_states
                grad_C[start:end] = torch.matmul(states.transpose(-1, -2), grad_y_chunk).squeeze(-1)
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
        return grad_u, grad_delta, grad_A, grad_B, grad_C, None, None
