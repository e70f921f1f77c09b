"""The hand-written backward of the methods other than zoh: the weights' derivatives against autograd, and the
torch.compile'd kernels against the float64 oracle (the eager kernels are checked by test_torch_scan.py)."""
import pytest
import torch

from mmssm.ops.selective_scan import METHODS, discretize, torch_scan

from .helpers import DEVICE, make_inputs
from .test_torch_scan import compare_with_naive

# both sides of the Taylor/closed-form branch point at |x| = 1, stiff and unstable x, and x = 0
X_VALUES = (-300.0, -30.0, -2.5, -1.0000001, -1.0, -0.9999999, -0.5, -1e-3, -1e-9, 0.0, 1e-4, 0.7, 1.5)


@pytest.mark.parametrize('method', METHODS)
def test_weight_derivatives_match_autograd(method):
    x = torch.tensor(X_VALUES, dtype=torch.float64, requires_grad=True)
    a_bar, a_bar_prime, weights, weight_primes = discretize(method, x, derivatives=True)
    a_bar_plain, weights_plain = discretize(method, x.detach())
    torch.testing.assert_close(a_bar.detach(), a_bar_plain, rtol=0, atol=0)
    for weight, weight_plain in zip(weights, weights_plain):
        if isinstance(weight, torch.Tensor):
            torch.testing.assert_close(weight.detach(), weight_plain, rtol=0, atol=0)
    for value, derivative in [(a_bar, a_bar_prime)] + list(zip(weights, weight_primes)):
        if not isinstance(value, torch.Tensor):
            assert derivative == 0.0
            continue
        (expected,) = torch.autograd.grad(value.sum(), x, retain_graph=True)
        torch.testing.assert_close(derivative.detach(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(DEVICE != 'cpu', reason='torch.compile is used on CPU tensors only')
@pytest.mark.slow
@pytest.mark.parametrize('method', ['highorder', 'rk4'])
def test_compiled_kernels_match_naive(method, monkeypatch):
    """MMSSM_SCAN_COMPILE=1 compiles at every size: forward, last state and every gradient against the oracle,
    with groups, a short last chunk and both branches of the phi functions. Compiling costs ~20 s per method on
    a 2-core CPU, so two stand for the two kinds of kernel: an exponential integrator (generic in its moment
    weights; highorder has the most) and a polynomial one (rk4); foh, poly and bilinear are compiled by
    benchmarks/scan_cpu.py."""
    monkeypatch.setenv('MMSSM_SCAN_COMPILE', '1')
    failures = len(torch_scan._COMPILE_FAILED)
    inputs = make_inputs(2, 4, 23, 16, groups=2, seed=13)
    compare_with_naive(method, inputs, chunk_size=7)
    assert len(torch_scan._COMPILE_FAILED) == failures, torch_scan._COMPILE_FAILED[-1]


@pytest.mark.skipif(DEVICE != 'cpu', reason='torch.compile is used on CPU tensors only')
def test_compile_failure_falls_back_to_eager(monkeypatch):
    monkeypatch.setenv('MMSSM_SCAN_COMPILE', '1')
    monkeypatch.setattr(torch_scan, '_COMPILED', {})
    monkeypatch.setattr(torch_scan, '_COMPILE_FAILED', [])

    def no_compiler(*args, **kwargs):
        raise RuntimeError('no C++ compiler found')

    monkeypatch.setattr(torch, 'compile', no_compiler)
    inputs = make_inputs(1, 2, 9, 3, seed=2)
    with pytest.warns(RuntimeWarning, match='torch.compile failed .*no C\\+\\+ compiler found.*eagerly'):
        compare_with_naive('foh', inputs, chunk_size=4)
    assert len(torch_scan._COMPILE_FAILED) == 1
    compare_with_naive('poly', inputs)  # and no second attempt, no second warning
    assert len(torch_scan._COMPILE_FAILED) == 1
