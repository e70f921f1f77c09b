"""The math of every discretization method, written once (docs/discretization.md derives it).

The continuous system, per channel d and state n, is h'(t) = a h(t) + v(t) with a = A[d, n] and the forcing
v(t) = B(t) u(t). A step of length delta_t ends at sample t. Every method gives

    h_t = A_bar(x_t) h_{t-1} + delta_t * sum_j W_j(x_t) v_{t-j},      x_t = delta_t * a,

where j counts samples back from t in the scan's own direction (j = 0 is the current sample). Samples before
the start of the sequence are taken equal to its first sample. Interpolating methods place the earlier samples
one current step apart (t - j at -j * delta_t), so their weights depend on x_t alone.
"""
import math

import torch

METHODS = ('zoh', 'foh', 'bilinear', 'poly', 'highorder', 'rk4')

# How many earlier samples (beyond the current one) each method reads.
NEIGHBOURS = {'zoh': 0, 'foh': 1, 'bilinear': 1, 'poly': 2, 'highorder': 3, 'rk4': 3}

# Global order of accuracy in delta for a smooth input and constant delta
# (measured in tests/test_ops/test_selective_scan/test_discretize.py).
ORDER = {'zoh': 1, 'foh': 2, 'bilinear': 2, 'poly': 3, 'highorder': 4, 'rk4': 4}

# The left end of the real interval of x = a * delta on which |A_bar| <= 1 (the right end is 0 for all).
# RK4's is the real root of 1 + x/2 + x^2/6 + x^3/24 = 0; the others are stable for every x <= 0.
RK4_STABILITY_BOUNDARY = -2.785293563405282
STABILITY_BOUNDARY = {'zoh': -math.inf, 'foh': -math.inf, 'bilinear': -math.inf, 'poly': -math.inf,
                      'highorder': -math.inf, 'rk4': RK4_STABILITY_BOUNDARY}

# Below |x| = 1 the phi functions come from the Taylor series of the highest one and the recurrence
# phi_k = x phi_{k+1} + 1/k! taken downwards, which is stable there; the upward closed forms
# phi_{k+1} = (phi_k - 1/k!) / x cancel catastrophically near 0 and are used only for |x| >= 1.
# The term counts leave a truncation error below the dtype's resolution.
_TAYLOR_CUTOFF = 1.0
_TAYLOR_TERMS = {torch.float64: 18, torch.float32: 11}


def check_method(discretization: str) -> str:
    if discretization not in METHODS:
        raise ValueError(f'discretization must be one of {METHODS}, got {discretization!r}.')
    return discretization


def phi_functions(x: torch.Tensor, count: int) -> list:
    """[phi_1(x), ..., phi_count(x)] with phi_k(x) = sum_j x^j / (j + k)!, so that
    int_0^1 exp(x (1 - r)) r^(k-1) dr = (k-1)! phi_k(x)."""
    small = x.abs() < _TAYLOR_CUTOFF
    # Each branch is evaluated where the other one is used too, so it gets an argument that keeps it finite
    # there (an inf/NaN in the unused branch of a where still poisons the gradient).
    x_large = torch.where(small, torch.full_like(x, -2.0), x)
    x_small = torch.where(small, x, torch.zeros_like(x))
    terms = _TAYLOR_TERMS.get(x.dtype, 11)
    taylor = torch.full_like(x, 1.0 / math.factorial(terms - 1 + count))
    for j in range(terms - 2, -1, -1):  # Horner, one fused multiply-add per term
        taylor = torch.addcmul(x.new_tensor(1.0 / math.factorial(j + count)), taylor, x_small)
    taylor_phis = [taylor]
    for k in range(count - 1, 0, -1):
        taylor_phis.insert(0, torch.addcmul(x.new_tensor(1.0 / math.factorial(k)), taylor_phis[0], x_small))
    result = []
    closed = torch.exp(x_large)  # phi_0
    for k in range(count):
        closed = (closed - 1.0 / math.factorial(k)) / x_large
        result.append(torch.where(small, taylor_phis[k], closed))
    return result


def discretize(discretization: str, x: torch.Tensor) -> tuple:
    """A_bar(x) and the input weights [W_0(x), W_1(x), ...] of ``discretization`` (see the module docstring).

    A weight may be a Python float where it does not depend on x.
    """
    if discretization == 'zoh':
        # Mamba's: A_bar = exp(delta a), B_bar = delta B (the input integral to first order).
        return torch.exp(x), [1.0]
    if discretization == 'bilinear':
        # Trapezoidal rule on h' = a h + v: (1 - x/2) h_t = (1 + x/2) h_{t-1} + delta (v_{t-1} + v_t) / 2.
        inverse = 1.0 / (2.0 - x)
        return (2.0 + x) * inverse, [inverse, inverse]
    if discretization == 'rk4':
        # Classical RK4 on h' = a h + v(t), with v at the half step from the cubic through v_{t-3..t}:
        # v_mid = (5 v_t + 15 v_{t-1} - 5 v_{t-2} + v_{t-3}) / 16.
        x2 = x * x
        a_bar = 1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x / 24.0)))
        mid = (4.0 + 2.0 * x + 0.5 * x2) / 6.0  # weight of v_mid
        start = (1.0 + x + 0.5 * x2 + 0.25 * x2 * x) / 6.0  # weight of v_{t-1}
        return a_bar, [1.0 / 6.0 + mid * (5.0 / 16.0), start + mid * (15.0 / 16.0), mid * (-5.0 / 16.0),
                       mid * (1.0 / 16.0)]
    # Exponential integrators: the input is the polynomial through the last samples, integrated exactly.
    # mu_k = int_0^1 exp(x (1 - r)) r^k dr = k! phi_{k+1}(x); r = 0 is sample t-1 and r = 1 is sample t.
    degree = NEIGHBOURS[check_method(discretization)]
    phis = phi_functions(x, degree + 1)
    mu = [math.factorial(k) * phis[k] for k in range(degree + 1)]
    a_bar = torch.exp(x)
    if discretization == 'foh':  # line through v_{t-1} (r = 0) and v_t (r = 1)
        return a_bar, [mu[1], mu[0] - mu[1]]
    if discretization == 'poly':  # quadratic through r = -1, 0, 1
        return a_bar, [(mu[2] + mu[1]) * 0.5, mu[0] - mu[2], (mu[2] - mu[1]) * 0.5]
    # highorder: cubic through r = -2, -1, 0, 1
    return a_bar, [(mu[3] + 3.0 * mu[2] + 2.0 * mu[1]) / 6.0,
                   (mu[3] + 2.0 * mu[2] - mu[1] - 2.0 * mu[0]) * -0.5,
                   (mu[3] + mu[2] - 2.0 * mu[1]) * 0.5,
                   (mu[3] - mu[1]) / -6.0]
