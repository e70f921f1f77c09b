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


def _exp_and_phis(x: torch.Tensor, count: int) -> tuple:
    """exp(x) and [phi_1(x), ..., phi_count(x)], sharing the one exp between A_bar and the closed forms."""
    small = x.abs() < _TAYLOR_CUTOFF
    # Each branch is evaluated where the other one is used too, so it gets an argument that keeps it finite
    # there (an inf/NaN in the unused branch of a where still poisons an autograd gradient). Clamping leaves
    # x unchanged on |x| < 1, the only place the Taylor branch is used.
    x_small = x.clamp(-_TAYLOR_CUTOFF, _TAYLOR_CUTOFF)
    inverse_large = 1.0 / torch.where(small, torch.full_like(x, -2.0), x)
    exp_x = torch.exp(x)
    terms = _TAYLOR_TERMS.get(x.dtype, 11)
    taylor = x_small * (1.0 / math.factorial(terms - 1 + count)) + 1.0 / math.factorial(terms - 2 + count)
    for j in range(terms - 3, -1, -1):  # Horner, one multiply-add per term
        taylor = taylor * x_small + 1.0 / math.factorial(j + count)
    taylor_phis = [taylor]
    for k in range(count - 1, 0, -1):  # phi_k = x phi_{k+1} + 1/k!, downwards
        taylor_phis.insert(0, taylor_phis[0] * x_small + 1.0 / math.factorial(k))
    result = []
    # phi_{k+1} = (phi_k - 1/k!) / x, upwards from phi_0 = exp(x); where |x| < 1 the value is finite and unused
    closed = exp_x
    for k in range(count):
        closed = (closed - 1.0 / math.factorial(k)) * inverse_large
        result.append(torch.where(small, taylor_phis[k], closed))
    return exp_x, result


def phi_functions(x: torch.Tensor, count: int) -> list:
    """[phi_1(x), ..., phi_count(x)] with phi_k(x) = sum_j x^j / (j + k)!, so that
    int_0^1 exp(x (1 - r)) r^(k-1) dr = (k-1)! phi_k(x)."""
    return _exp_and_phis(x, count)[1]


# The interpolating methods' weights as combinations of the moments mu_k: W_j = sum_k _MOMENT_WEIGHTS[j][k] mu_k.
# mu_k = int_0^1 exp(x (1 - r)) r^k dr = k! phi_{k+1}(x); r = 0 is sample t-1 and r = 1 is sample t.
_MOMENT_WEIGHTS = {
    # line through v_{t-1} (r = 0) and v_t (r = 1)
    'foh': ((0.0, 1.0), (1.0, -1.0)),
    # quadratic through r = -1, 0, 1
    'poly': ((0.0, 0.5, 0.5), (1.0, 0.0, -1.0), (0.0, -0.5, 0.5)),
    # cubic through r = -2, -1, 0, 1
    'highorder': ((0.0, 1.0 / 3.0, 0.5, 1.0 / 6.0), (1.0, 0.5, -1.0, -0.5), (0.0, -1.0, 0.5, 0.5),
                  (0.0, 1.0 / 6.0, 0.0, -1.0 / 6.0)),
}


def _combine(coefficients, terms):
    """sum_k coefficients[k] * terms[k], skipping zero coefficients."""
    total = None
    for coefficient, term in zip(coefficients, terms):
        if coefficient == 0.0:
            continue
        part = term if coefficient == 1.0 else term * coefficient
        total = part if total is None else total + part
    return total


def _rk4_polynomials(x):
    """RK4's A_bar, the weight of v_mid and the weight of v_{t-1}, and their derivatives in x."""
    a_bar = 1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0))))
    a_bar_prime = 1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0)))
    mid = (4.0 + x * (2.0 + x * 0.5)) * (1.0 / 6.0)  # weight of v_mid
    mid_prime = (2.0 + x) * (1.0 / 6.0)
    start = (1.0 + x * (1.0 + x * (0.5 + x * 0.25))) * (1.0 / 6.0)  # weight of v_{t-1}
    start_prime = (1.0 + x * (1.0 + x * 0.75)) * (1.0 / 6.0)
    return a_bar, a_bar_prime, mid, mid_prime, start, start_prime


def discretize(discretization: str, x: torch.Tensor, derivatives: bool = False) -> tuple:
    """A_bar(x) and the input weights [W_0(x), W_1(x), ...] of ``discretization`` (see the module docstring).

    A weight may be a Python float where it does not depend on x. With ``derivatives``, returns
    (A_bar, dA_bar/dx, weights, [dW_0/dx, ...]) instead, for the hand-written backward of the scan.
    """
    if discretization == 'zoh':
        # Mamba's: A_bar = exp(delta a), B_bar = delta B (the input integral to first order).
        a_bar = torch.exp(x)
        return (a_bar, a_bar, [1.0], [0.0]) if derivatives else (a_bar, [1.0])
    if discretization == 'bilinear':
        # Trapezoidal rule on h' = a h + v: (1 - x/2) h_t = (1 + x/2) h_{t-1} + delta (v_{t-1} + v_t) / 2.
        inverse = 1.0 / (2.0 - x)
        a_bar = (2.0 + x) * inverse
        if not derivatives:
            return a_bar, [inverse, inverse]
        inverse_prime = inverse * inverse
        return a_bar, 4.0 * inverse_prime, [inverse, inverse], [inverse_prime, inverse_prime]
    if discretization == 'rk4':
        # Classical RK4 on h' = a h + v(t), with v at the half step from the cubic through v_{t-3..t}:
        # v_mid = (5 v_t + 15 v_{t-1} - 5 v_{t-2} + v_{t-3}) / 16.
        a_bar, a_bar_prime, mid, mid_prime, start, start_prime = _rk4_polynomials(x)
        weights = [1.0 / 6.0 + mid * (5.0 / 16.0), start + mid * (15.0 / 16.0), mid * (-5.0 / 16.0),
                   mid * (1.0 / 16.0)]
        if not derivatives:
            return a_bar, weights
        return a_bar, a_bar_prime, weights, [mid_prime * (5.0 / 16.0), start_prime + mid_prime * (15.0 / 16.0),
                                             mid_prime * (-5.0 / 16.0), mid_prime * (1.0 / 16.0)]
    # Exponential integrators: the input is the polynomial through the last samples, integrated exactly.
    coefficients = _MOMENT_WEIGHTS[check_method(discretization)]
    degree = len(coefficients) - 1
    # d mu_k / dx = int_0^1 (1 - r) exp(x (1 - r)) r^k dr = mu_k - mu_{k+1}: one more moment gives the derivatives
    count = degree + 2 if derivatives else degree + 1
    a_bar, phis = _exp_and_phis(x, count)
    mu = [phis[k] * float(math.factorial(k)) if k > 1 else phis[k] for k in range(count)]
    weights = [_combine(row, mu) for row in coefficients]
    if not derivatives:
        return a_bar, weights
    mu_prime = [mu[k] - mu[k + 1] for k in range(degree + 1)]
    return a_bar, a_bar, weights, [_combine(row, mu_prime) for row in coefficients]
