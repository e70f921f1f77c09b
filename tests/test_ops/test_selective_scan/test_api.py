"""The public functions: input checks that name the value and the fix, backend choice, bidirectional form."""
import os
import subprocess
import sys

import pytest
import torch

import mmssm.ops.selective_scan as scan_module
from mmssm.ops.selective_scan import (
    METHODS,
    available_backends,
    cuda_scan,
    selective_scan,
    selective_scan_bidirectional,
    selective_scan_naive,
)

from .helpers import assert_close, make_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


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
    (dict(C=torch.randn(2, 2, 3, 10, dtype=torch.float64)), r'B and C must have one group layout .* got B '
                                                             r'\(2, 3, 10\) \(1 groups\) and C \(2, 2, 3, 10\) '
                                                             r'\(2 groups\)'),
    (dict(B=torch.randn(2, 4, 3, 10, dtype=torch.float64), C=torch.randn(2, 2, 3, 10, dtype=torch.float64)),
     r'B and C must have one group layout .* got B \(2, 4, 3, 10\) \(4 groups\) and C \(2, 2, 3, 10\) '
     r'\(2 groups\)'),
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


def test_b_and_c_with_one_group_layout_in_two_spellings_are_accepted():
    """(batch, N, L) and (batch, 1, N, L) are the same layout."""
    inputs = make_inputs(2, 4, 10, 3, grad=False)
    y = selective_scan(**dict(inputs, C=inputs['C'].unsqueeze(1)))
    assert_close('C with one group', selective_scan(**inputs), y, atol=0)


@pytest.mark.parametrize('name', ['D', 'z', 'delta_bias'])
@pytest.mark.parametrize('missing', [0, 1])
def test_bidirectional_with_an_option_in_one_direction_only(name, missing):
    """D, z or delta_bias given for one direction and None for the other: that direction goes without it."""
    forward, backward = make_inputs(2, 4, 13, 3, seed=1), make_inputs(2, 4, 13, 3, seed=2)
    directions = [dict(forward), dict(backward)]
    directions[missing][name] = None
    names = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
    pairs = {n: (directions[0][n], directions[1][n]) for n in names}
    y_f, y_b = selective_scan_bidirectional(**pairs, discretization='foh')
    references = [selective_scan_naive(**directions[d], discretization='foh', reverse=d == 1) for d in (0, 1)]
    assert_close('forward', references[0], y_f, atol=1e-10, rtol=1e-9)
    assert_close('backward', references[1], y_b, atol=1e-10, rtol=1e-9)
    (y_f.sum() + y_b.sum()).backward()
    present = directions[1 - missing][name]
    assert present.grad is not None and present.grad.abs().sum() > 0


def test_bidirectional_wants_the_required_inputs_in_both_directions():
    forward = make_inputs(2, 4, 13, 3, grad=False)
    pairs = {n: (forward[n], forward[n]) for n in ('u', 'delta', 'A', 'B', 'C')}
    pairs['B'] = (forward['B'], None)
    with pytest.raises(ValueError, match=r'B must be given for both directions, got None for the backward one'):
        selective_scan_bidirectional(**pairs)


def test_cuda_reports_what_it_cannot_run():
    u = torch.zeros(2, 4, 10, dtype=torch.bfloat16)
    A = torch.zeros(4, 3)
    B_bf16 = torch.zeros(2, 3, 10, dtype=torch.bfloat16)
    B_fp32 = B_bf16.float()
    assert cuda_scan.unsupported_reason(u, B_bf16, A, B_bf16) is None
    assert cuda_scan.unsupported_reason(u, B_fp32, A, B_fp32) is None
    for B, C in ((B_bf16, B_fp32), (B_fp32, B_bf16)):
        assert cuda_scan.unsupported_reason(u, B, A, C) == (
            f'the CUDA kernels take B and C in one dtype (both torch.bfloat16 or both float32), got B {B.dtype} and '
            f'C {C.dtype}')
    assert 'at most 32 states, got N=33' in cuda_scan.unsupported_reason(u, B_bf16, torch.zeros(4, 33), B_bf16)
    big_batch = torch.zeros(cuda_scan.MAX_BATCH + 1, 1, 1, dtype=torch.bfloat16)
    assert 'at most 65535 batch elements, got batch=65536' in cuda_scan.unsupported_reason(
        big_batch, torch.zeros(cuda_scan.MAX_BATCH + 1, 3, 1, dtype=torch.bfloat16), A[:1], None)


def test_auto_skips_cuda_for_inputs_it_cannot_run(monkeypatch):
    """With B and C in different dtypes (both allowed by the API), auto takes the next backend and an explicit
    backend='cuda' says why not; the backend list is faked, so that this runs without a GPU."""
    monkeypatch.setattr(scan_module, 'available_backends', lambda device: ['cuda', 'triton', 'torch'])
    inputs = make_inputs(2, 4, 10, 3, dtype=torch.bfloat16, device='cpu', grad=False)
    u, A, B = inputs['u'], inputs['A'].float(), inputs['B']
    assert scan_module._resolve_backend('auto', u, B, A, inputs['C']) == 'cuda'
    C = inputs['C'].float()
    assert scan_module._resolve_backend('auto', u, B, A, C) == 'triton'
    with pytest.raises(ValueError, match=r"backend='cuda' cannot run this call: the CUDA kernels take B and C in one "
                                         r'dtype .* got B torch.bfloat16 and C torch.float32\. Use backend=.auto.'):
        scan_module._resolve_backend('cuda', u, B, A, C)


@pytest.mark.parametrize('value,expected', [(None, (False, True)), ('0', (False, False)), ('1', (True, True)),
                                            ('bwd', (False, True))])
def test_the_environment_switch(value, expected):
    """MMSSM_TRITON_CUDA_ZOH: by default only the backward on the strided kernels; 0 neither, 1 both."""
    env = {k: v for k, v in os.environ.items() if k != 'MMSSM_TRITON_CUDA_ZOH'}
    if value is not None:
        env['MMSSM_TRITON_CUDA_ZOH'] = value
    code = 'from mmssm.ops.selective_scan import triton_scan as t; print(t.FWD_CUDA_ZOH, t.BWD_CUDA_ZOH)'
    out = subprocess.run([sys.executable, '-c', code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(v) for v in expected]


def test_a_wrong_environment_switch_is_an_error():
    env = dict(os.environ, MMSSM_TRITON_CUDA_ZOH='yes')
    code = 'import mmssm.ops.selective_scan.triton_scan'
    out = subprocess.run([sys.executable, '-c', code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "MMSSM_TRITON_CUDA_ZOH='yes'" in out.stderr and "'bwd'" in out.stderr
