import pytest
import torch

from mmssm.models.layers import RMSNorm


def reference_rms_norm(x, weight, eps):
    x = x.double()
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


@pytest.mark.parametrize('shape', [(2, 7, 5), (3, 1), (1, 2, 3, 17)])
def test_rms_norm_matches_formula(shape):
    torch.manual_seed(0)
    norm = RMSNorm(shape[-1], eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(shape) * 3
    expected = reference_rms_norm(x, norm.weight, 1e-6)
    torch.testing.assert_close(norm(x).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_rms_norm_low_precision_is_computed_in_float32(dtype):
    torch.manual_seed(0)
    norm = RMSNorm(384)
    x = torch.randn(4, 384) * 100 + 50
    out = norm(x.to(dtype))
    assert out.dtype == dtype
    expected = reference_rms_norm(x.to(dtype).float(), norm.weight, norm.eps)
    # Only the final rounding to the low precision remains.
    torch.testing.assert_close(out.double(), expected.to(dtype).double(), rtol=0, atol=0)


def test_rms_norm_without_affine_has_no_parameters():
    norm = RMSNorm(8, elementwise_affine=False)
    assert list(norm.parameters()) == []
    x = torch.randn(3, 8)
    torch.testing.assert_close(norm(x).pow(2).mean(-1), torch.ones(3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_features=0), 'num_features must be a positive int, got 0'),
    (dict(num_features=8, eps=0.0), 'eps must be > 0, got 0.0'),
])
def test_rms_norm_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RMSNorm(**kwargs)


def test_rms_norm_rejects_wrong_width():
    with pytest.raises(ValueError, match=r'num_features=8, got input of shape \(2, 9\)'):
        RMSNorm(8)(torch.randn(2, 9))


def test_rms_norm_keeps_float64():
    """float64 input is normalized in float64 (float32 statistics broke the float64 CPU-vs-CUDA parity checks by
    their device-dependent rounding); lower precisions take float32 statistics."""
    norm = RMSNorm(7).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1e3
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight
    torch.testing.assert_close(norm(x), expected, rtol=1e-15, atol=0)
    half = RMSNorm(7)(x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16
