"""The public functions: input checks that name the value and the fix, backend choice, bidirectional form."""
import pytest
import torch

from mmssm.ops.selective_scan import (
    METHODS,
    available_backends,
    selective_scan,
    selective_scan_bidirectional,
    selective_scan_naive,
)

from .helpers import assert_close, make_inputs


def good_inputs():
    return make_inputs(2, 4, 10, 3, grad=False)


@pytest.mark.parametrize('change, message', [
    (dict(u=torch.randn(2, 4)), r'u must have shape \(batch, dim, L\), got \(2, 4\)'),
    (dict(u=torch.randn(2, 4, 0, dtype=torch.float64)), r'at least one step \(L >= 1\)'),
    (dict(delta=torch.randn(2, 4, 9, dtype=torch.float64)), r'delta must have the shape of u \(2, 4, 10\), got'),
    (dict(delta=torch.randn(2, 4, 10, dtype=torch.float32)), r'delta must have the dtype of u \(torch.float64\)'),
    (dict(z=torch.randn(2, 4, 10, dtype=torch.float16)), r'z must have the dtype of u'),
    (dict(A=torch.randn(5, 3, dtype=torch.float64)), r'A must have shape \(dim, N\) = \(4, N\), got \(5, 3\)'),
    (dict(A=torch.randn(4, 3, dtype=torch.complex64)), r'A must have a floating dtype .* got torch.complex64'),
    (dict(B=torch.randn(2, 2, 10, dtype=torch.float64)), r'B must have shape \(batch, N, L\) = \(2, 3, 10\)'),
    (dict(C=torch.randn(2, 3, 3, 10, dtype=torch.float64)), r'C must have shape .* groups dividing dim=4, '
                                                             r'got \(2, 3, 3, 10\)'),
    (dict(B=torch.randn(2, 3, 10, dtype=torch.float16)), r'B must have the dtype of u \(torch.float64\) or '
                                                          r'float32, got torch.float16'),
    (dict(D=torch.randn(3, dtype=torch.float64)), r'D must have shape \(dim,\) = \(4,\), got \(3,\)'),
    (dict(delta_bias=torch.randn(4, 1, dtype=torch.float64)), r'delta_bias must have shape \(dim,\)'),
    (dict(u=torch.randint(0, 3, (2, 4, 10))), r'u must have a floating dtype .* got torch.int64'),
    (dict(D=[1.0, 2.0, 3.0, 4.0]), r'D must be a torch.Tensor, got list'),
    (dict(discretization='tustin'), r"discretization must be one of \('zoh', 'foh', 'bilinear', 'poly', "
                                    r"'highorder', 'rk4'\), got 'tustin'"),
    (dict(backend='fast'), r"backend must be 'auto' or one of \('torch', 'triton', 'cuda'\), got 'fast'"),
])
def test_bad_input_is_named(change, message):
    kwargs = dict(good_inputs(), **change)
    with pytest.raises((ValueError, RuntimeError), match=message):
        selective_scan(**kwargs)


def test_device_mismatch_is_named():
    kwargs = good_inputs()
    kwargs['D'] = kwargs['D'].to('meta')
    device = kwargs['u'].device
    with pytest.raises(ValueError, match=rf'D is on meta but u is on {device}; move all inputs to one device'):
        selective_scan(**kwargs)


def test_missing_backend_says_how_to_get_it():
    cpu_inputs = make_inputs(2, 4, 10, 3, grad=False, device='cpu')
    with pytest.raises(RuntimeError, match=r"backend='cuda' is not available for tensors on cpu .*Build the "
                                           r"extension \(.*\), or use backend=\"triton\", \"torch\" or \"auto\""):
        selective_scan(**cpu_inputs, backend='cuda')
    with pytest.raises(RuntimeError, match=r"backend='triton' is not available .*needs a CUDA device"):
        selective_scan(**cpu_inputs, backend='triton')


def test_environment_variable_chooses_the_backend(monkeypatch):
    cpu_inputs = make_inputs(2, 4, 10, 3, grad=False, device='cpu')
    monkeypatch.setenv('MMSSM_SCAN_BACKEND', 'triton')
    with pytest.raises(RuntimeError, match=r"MMSSM_SCAN_BACKEND='triton' is not available"):
        selective_scan(**cpu_inputs)
    monkeypatch.setenv('MMSSM_SCAN_BACKEND', 'torch')
    assert selective_scan(**cpu_inputs).shape == (2, 4, 10)
    assert available_backends(torch.device('cpu')) == ['torch']


@pytest.mark.parametrize('method', METHODS)
def test_bidirectional_is_a_forward_and_a_reversed_scan(method):
    forward, backward = make_inputs(2, 4, 13, 3, seed=1), make_inputs(2, 4, 13, 3, seed=2)
    z = forward['z']
    names = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')
    pairs = {name: (forward[name], backward[name]) for name in names}
    (y_f, y_b), (h_f, h_b) = selective_scan_bidirectional(**pairs, z=z, discretization=method,
                                                          return_last_state=True)
    ref_f, ref_hf = selective_scan_naive(**{n: forward[n] for n in names}, z=z, discretization=method,
                                         return_last_state=True)
    ref_b, ref_hb = selective_scan_naive(**{n: backward[n] for n in names}, z=z, discretization=method,
                                         reverse=True, return_last_state=True)
    for name, ref, out in (('forward', ref_f, y_f), ('backward', ref_b, y_b), ('last forward', ref_hf, h_f),
                           ('last backward', ref_hb, h_b)):
        assert_close(name, ref, out, atol=1e-10, rtol=1e-9)
    # gradients reach both parameter sets
    (y_f.sum() + y_b.sum()).backward()
    assert forward['A'].grad is not None and backward['A'].grad is not None


def test_bidirectional_wants_pairs():
    inputs = good_inputs()
    with pytest.raises(ValueError, match=r'u must be a pair \(forward, backward\) of tensors, got a single tensor'):
        selective_scan_bidirectional(**inputs)
