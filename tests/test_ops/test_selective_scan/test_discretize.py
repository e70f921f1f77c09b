"""The numerical analysis of docs/discretization.md: order of accuracy and stability region of every method."""
import math

import mpmath
import numpy as np
import pytest
import torch

from mmssm.ops.selective_scan import METHODS, ORDER, STABILITY_BOUNDARY, discretize, selective_scan
from mmssm.ops.selective_scan.discretize import RK4_STABILITY_BOUNDARY, check_method, phi_functions

T_END = 4.0
A_VALUES = (-0.5, -2.0)


def smooth_input(t):
    # Starts flat (the first four derivatives vanish at t = 0), so the samples that the methods take as equal
    # to the first one before the start are right to O(delta^4) and the interior scheme's order shows.
    return (1 - np.cos(t)) ** 2 * np.sin(3 * t) + 0.5 * (1 - np.cos(t)) ** 2


def exact_states(a, steps):
    """h at every sample time, h(0) = 0: each step integrated exactly by 16-point Gauss-Legendre."""
    nodes, weights = np.polynomial.legendre.leggauss(16)
    step = T_END / steps
    states, h = [], 0.0
    for t in range(steps):
        s = (nodes + 1) / 2 * step + t * step
        h = np.exp(a * step) * h + np.sum(weights * step / 2 * np.exp(a * ((t + 1) * step - s)) * smooth_input(s))
        states.append(h)
    return np.array(states)


def max_error(method, steps):
    """The largest error of the scan's states at the sample times against the continuous solution."""
    step = T_END / steps
    times = step * np.arange(1, steps + 1)  # sample t ends step t; the state starts at 0 at time 0
    u = torch.tensor(smooth_input(times), dtype=torch.float64).view(1, 1, steps).repeat(1, len(A_VALUES), 1)
    delta = torch.full_like(u, step)
    A = torch.tensor(A_VALUES, dtype=torch.float64).view(-1, 1)
    ones = torch.ones(1, 1, steps, dtype=torch.float64)
    y = selective_scan(u, delta, A, ones, ones, delta_softplus=False, discretization=method)
    exact = torch.tensor(np.stack([exact_states(a, steps) for a in A_VALUES]), dtype=torch.float64)
    return (y[0] - exact).abs().max().item()


@pytest.mark.parametrize('method', METHODS)
def test_error_falls_at_the_documented_order(method):
    steps = [40, 80, 160, 320]
    errors = [max_error(method, n) for n in steps]
    observed = [math.log2(e0 / e1) for e0, e1 in zip(errors, errors[1:])]
    assert all(abs(o - ORDER[method]) < 0.25 for o in observed[1:]), (method, errors, observed)


def test_higher_order_methods_are_more_accurate():
    errors = {method: max_error(method, 160) for method in METHODS}
    assert errors['highorder'] < errors['poly'] < errors['foh'] < errors['zoh']
    assert errors['rk4'] < errors['foh'] and errors['bilinear'] < errors['zoh']


@pytest.mark.parametrize('method', METHODS)
def test_stable_on_the_documented_interval(method):
    left = max(STABILITY_BOUNDARY[method], -1e4)
    x = torch.cat([torch.linspace(left, 0, 20001, dtype=torch.float64),
                   -torch.logspace(-8, 4, 200, dtype=torch.float64)])
    x = x[x >= left]
    a_bar, _ = discretize(method, x)
    assert (a_bar.abs() <= 1 + 1e-12).all(), method
    # and unstable for a > 0, like the system itself
    a_bar_positive, _ = discretize(method, torch.tensor([0.1, 1.0], dtype=torch.float64))
    assert (a_bar_positive > 1).all()


def test_rk4_boundary_is_sharp_and_beyond_it_the_scan_grows():
    x = torch.tensor([RK4_STABILITY_BOUNDARY, RK4_STABILITY_BOUNDARY - 0.05], dtype=torch.float64)
    a_bar, _ = discretize('rk4', x)
    assert abs(a_bar[0].item()) == pytest.approx(1.0, abs=1e-12)
    assert a_bar[1].item() > 1.0
    # the operator computes the method as it is (documented): beyond the boundary the state grows
    steps = 200
    u = torch.zeros(1, 2, steps, dtype=torch.float64)
    u[..., 0] = 1.0
    A = torch.tensor([[-1.0], [-1.0]], dtype=torch.float64)
    delta = torch.tensor([[2.7], [2.9]], dtype=torch.float64).expand(2, steps).unsqueeze(0)
    ones = torch.ones(1, 1, steps, dtype=torch.float64)
    _, h = selective_scan(u, delta, A, ones, ones, delta_softplus=False, discretization='rk4',
                          return_last_state=True)
    assert abs(h[0, 0, 0].item()) < 1.0 < abs(h[0, 1, 0].item())


def test_bilinear_is_not_l_stable():
    a_bar, _ = discretize('bilinear', torch.tensor([-1e8], dtype=torch.float64))
    assert a_bar.item() == pytest.approx(-1.0, abs=1e-6)  # stiff modes flip sign instead of decaying
    for method in ('zoh', 'foh', 'poly', 'highorder'):
        a_bar, _ = discretize(method, torch.tensor([-1e3], dtype=torch.float64))
        assert a_bar.item() == 0.0


@pytest.mark.parametrize('method', METHODS)
def test_weights_sum_to_the_input_integral_for_a_constant_input(method):
    """A constant input is reproduced exactly by every interpolating rule: sum_j W_j = phi_1(x) = (e^x - 1)/x.
    zoh (Mamba's first-order rule), bilinear and rk4 agree with it only as x -> 0."""
    x = torch.tensor([-3.0, -1.0, -0.5, -1e-3, -1e-9], dtype=torch.float64)
    _, weights = discretize(method, x)
    total = sum(w if isinstance(w, torch.Tensor) else torch.full_like(x, w) for w in weights)
    phi_1 = torch.expm1(x) / x
    if method in ('foh', 'poly', 'highorder'):
        torch.testing.assert_close(total, phi_1, rtol=1e-13, atol=0)
    else:
        torch.testing.assert_close(total[-1:], phi_1[-1:], rtol=1e-8, atol=0)


def series_phi(k, x):
    x = mpmath.mpf(x)
    return float(mpmath.nsum(lambda j: x ** j / mpmath.factorial(j + k), [0, mpmath.inf]))


def test_phi_functions_match_their_series_across_the_branch_point():
    x = torch.tensor([-30.0, -1.5, -1.0000001, -0.9999999, -0.25, -1e-7, 0.0, 0.3], dtype=torch.float64)
    phis = phi_functions(x, 4)
    for k, phi in enumerate(phis, start=1):
        expected = torch.tensor([series_phi(k, float(v)) for v in x], dtype=torch.float64)
        torch.testing.assert_close(phi, expected, rtol=1e-13, atol=0)


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match=r"one of \('zoh', 'foh', 'bilinear', 'poly', 'highorder', 'rk4'\), "
                                         r"got 'euler'"):
        check_method('euler')
