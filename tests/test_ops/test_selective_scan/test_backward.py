"""The hand-written backward of the methods other than zoh: the weights' derivatives against autograd, and the
torch.compile'd kernels against the float64 oracle (the eager kernels are checked by test_torch_scan.py)."""
import pytest
import torch

from mmssm.ops.selective_scan import METHODS, discretize, selective_scan, selective_scan_naive, torch_scan

from .helpers import DEVICE, assert_all_close, float64_copies, make_inputs, outputs_and_grads
from .test_torch_scan import compare_with_naive

COMPILED_METHODS = [method for method in METHODS if method != 'zoh']  # zoh runs its two operations eagerly

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
    """MMSSM_SCAN_COMPILE=1 compiles at every size: in float64, forward, last state and every gradient against
    the oracle to 1e-10, with groups, a short last chunk and both branches of the phi functions. Two methods
    stand for the two kinds of kernel here: an exponential integrator (highorder has the most moment weights)
    and a polynomial one (rk4); test_compiled_kernels_float32_match_naive compiles every method in float32."""
    monkeypatch.setenv('MMSSM_SCAN_COMPILE', '1')
    failures = len(torch_scan._COMPILE_FAILED)
    inputs = make_inputs(2, 4, 23, 16, groups=2, seed=13)
    compare_with_naive(method, inputs, chunk_size=7)
    assert len(torch_scan._COMPILE_FAILED) == failures, torch_scan._COMPILE_FAILED[-1]


def _compiled_kernels_used(method, dtype):
    return all((kernel, method, dtype) in torch_scan._COMPILED
               for kernel in ('_forward_chunk_kernel', '_backward_chunk_kernel'))


@pytest.mark.skipif(DEVICE != 'cpu', reason='torch.compile is used on CPU tensors only')
@pytest.mark.slow
@pytest.mark.parametrize('method', COMPILED_METHODS)
def test_compiled_kernels_float32_match_naive(method, monkeypatch):
    """The compiled kernels as a model runs them: float32 inputs, L = 63 in seven chunks, groups; forward, last
    state and every gradient against the float64 loop, to float32 accuracy. Chunks of one length compile once
    (the recurrences are unrolled over a chunk, so each chunk length is a compile of its own, ~10 s on 2 cores;
    test_compiled_kernels_match_naive has a short last chunk)."""
    monkeypatch.setenv('MMSSM_SCAN_COMPILE', '1')
    failures = len(torch_scan._COMPILE_FAILED)
    inputs = make_inputs(2, 4, 63, 16, groups=2, dtype=torch.float32, seed=19)
    reference = outputs_and_grads(selective_scan_naive, float64_copies(inputs), discretization=method)
    results = outputs_and_grads(selective_scan, inputs, discretization=method, chunk_size=9, backend='torch')
    assert len(torch_scan._COMPILE_FAILED) == failures, torch_scan._COMPILE_FAILED[-1]
    assert _compiled_kernels_used(method, torch.float32)
    assert_all_close(f'compiled {method}', reference, results, relative=1e-5)


@pytest.mark.skipif(DEVICE != 'cpu', reason='torch.compile is used on CPU tensors only')
@pytest.mark.slow
def test_compiled_and_eager_kernels_agree_under_autocast(monkeypatch):
    """Under bfloat16 autocast the eager kernels (a matmul for y and dC) and the compiled ones (elementwise sums)
    both stay in float32, so they agree to float32 accuracy."""
    inputs = make_inputs(2, 4, 63, 16, groups=2, dtype=torch.float32, seed=23)
    results = {}
    for setting in ('0', '1'):
        monkeypatch.setenv('MMSSM_SCAN_COMPILE', setting)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            results[setting] = outputs_and_grads(selective_scan, inputs, discretization='foh', chunk_size=9,
                                                 backend='torch')
    assert _compiled_kernels_used('foh', torch.float32)
    assert_all_close('compiled vs eager under autocast', results['0'], results['1'], relative=1e-5)


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
