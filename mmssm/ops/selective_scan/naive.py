"""The oracle: a plain sequential loop in float64, written from each method's definition rather than from the
closed forms in discretize.py (RK4 as its four stages, the interpolating methods as a Lagrange polynomial
integrated by Gauss-Legendre quadrature, bilinear as the implicit trapezoidal step), so that the two can check
each other. Slow; differentiable by autograd."""
import numpy as np
import torch
import torch.nn.functional as F

from .discretize import NEIGHBOURS, check_method

# 64 Gauss-Legendre nodes integrate exp(x (1 - r)) p(r) over [0, 1] to float64 precision for |x| up to ~100.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(64)


def _lagrange_basis(nodes, r):
    """Values at r of the Lagrange basis polynomials for ``nodes``: one tensor per node."""
    basis = []
    for j, node_j in enumerate(nodes):
        value = torch.ones_like(r)
        for i, node_i in enumerate(nodes):
            if i != j:
                value = value * (r - node_i) / (node_j - node_i)
        basis.append(value)
    return basis


def selective_scan_naive(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                         discretization='zoh', reverse=False, return_last_state=False, keep_mask=None):
    """Same arguments and result as :func:`mmssm.ops.selective_scan.selective_scan`, computed in float64.
    A pruned step (keep_mask False) is taken literally: its forcing is 0 wherever a step reads it, and its
    output is 0."""
    check_method(discretization)
    out_dtype = u.dtype
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, dim, length = u.shape
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    # (batch, groups, N, L) -> per channel (batch, dim, N, L)
    B = B.repeat_interleave(dim // B.shape[1], dim=1)
    C = C.repeat_interleave(dim // C.shape[1], dim=1)
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    u_in = u
    keep = u.new_ones(batch, length) if keep_mask is None else keep_mask.double()
    if reverse:
        u, delta, B, C, keep = u.flip(-1), delta.flip(-1), B.flip(-1), C.flip(-1), keep.flip(-1)

    def forcing(t):  # v_t = B_t u_t, the first sample standing in for those before the start; 0 when pruned
        t = max(t, 0)
        v = B[..., t] * u[:, :, None, t]
        return v if keep_mask is None else v * keep[:, t, None, None]

    degree = NEIGHBOURS[discretization]
    if discretization in ('foh', 'poly', 'highorder'):
        # Sample t - j sits at r = 1 - j on the step's own scale; the step runs from r = 0 to r = 1.
        r = torch.tensor((_GL_NODES + 1) / 2, dtype=torch.float64, device=u.device)
        quad_weights = torch.tensor(_GL_WEIGHTS / 2, dtype=torch.float64, device=u.device)
        basis = _lagrange_basis([1.0 - j for j in range(degree + 1)], r)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        x = dt * A
        v = [forcing(t - j) for j in range(degree + 1)]
        if discretization == 'zoh':
            h = torch.exp(x) * h + dt * v[0]
        elif discretization == 'bilinear':
            h = ((1 + x / 2) * h + dt * (v[1] + v[0]) / 2) / (1 - x / 2)
        elif discretization == 'rk4':
            v_mid = (5 * v[0] + 15 * v[1] - 5 * v[2] + v[3]) / 16  # the cubic through v_{t-3..t} at r = 1/2
            k1 = A * h + v[1]  # the slope a h + v at the step's start, middle (twice) and end
            k2 = A * (h + dt / 2 * k1) + v_mid
            k3 = A * (h + dt / 2 * k2) + v_mid
            k4 = A * (h + dt * k3) + v[0]
            h = h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        else:
            kernel = torch.exp(x[..., None] * (1 - r)) * quad_weights  # (..., nodes)
            integral = sum(v[j] * (kernel * basis[j]).sum(-1) for j in range(degree + 1))
            h = torch.exp(x) * h + dt * integral
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if reverse:
        y, keep = y.flip(-1), keep.flip(-1)
    if D is not None:
        y = y + u_in * D.double()[:, None]
    if z is not None:
        y = y * F.silu(z.double())
    if keep_mask is not None:
        y = torch.where(keep_mask[:, None, :], y, torch.zeros_like(y))
    y = y.to(out_dtype)
    return (y, h) if return_last_state else y
