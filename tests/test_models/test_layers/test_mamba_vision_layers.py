"""The parts of MambaVision: its mixer, LayerNorm2d, the window split and the self-attention."""
import pytest
import torch
import torch.nn.functional as F

from mmssm.models.layers import LayerNorm2d, MambaVisionMixer, MultiheadSelfAttention
from mmssm.models.layers.window import pad_to_windows, window_merge, window_partition
from mmssm.ops.selective_scan import METHODS, selective_scan_naive


def randomized(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return module


def test_mixer_shapes_and_parameters():
    mixer = MambaVisionMixer(64)
    assert mixer.in_proj.weight.shape == (64, 64) and mixer.out_proj.weight.shape == (64, 64)
    assert mixer.x_proj.weight.shape == (4 + 16, 32) and mixer.dt_proj.weight.shape == (32, 4)
    assert mixer.A_log.shape == (32, 8) and mixer.D.shape == (32,)
    assert mixer.conv1d_x.weight.shape == (32, 1, 3) and mixer.conv1d_z.bias is None
    assert mixer(torch.randn(2, 9, 64)).shape == (2, 9, 64)


def test_mixer_counts_the_dt_bias_twice():
    """The official forward: delta = softplus(dt_proj(dt) + dt_proj.bias), y = scan(x) + D x, out_proj([y, z])."""
    torch.manual_seed(0)
    mixer = randomized(MambaVisionMixer(32, d_state=4)).double()
    tokens = torch.randn(2, 7, 32, dtype=torch.float64)
    x, z = mixer.in_proj(tokens).transpose(1, 2).chunk(2, dim=1)
    x = F.silu(F.conv1d(F.pad(x, (1, 1)), mixer.conv1d_x.weight, groups=16))
    z = F.silu(F.conv1d(F.pad(z, (1, 1)), mixer.conv1d_z.weight, groups=16))
    dt, B, C = mixer.x_proj(x.transpose(1, 2)).split([2, 4, 4], dim=-1)
    delta = (dt @ mixer.dt_proj.weight.T + 2 * mixer.dt_proj.bias).transpose(1, 2)
    y = selective_scan_naive(x, delta, -mixer.A_log.exp(), B.transpose(1, 2), C.transpose(1, 2), D=mixer.D)
    expected = mixer.out_proj(torch.cat([y, z], dim=1).transpose(1, 2))
    torch.testing.assert_close(mixer(tokens), expected, rtol=1e-12, atol=1e-12)


def test_mixer_conv_is_not_causal():
    torch.manual_seed(0)
    mixer = randomized(MambaVisionMixer(32)).eval()
    tokens = torch.randn(1, 6, 32)
    changed = tokens.clone()
    changed[:, 3] += 1
    a, b = mixer(tokens), mixer(changed)
    # token 2 sees token 3 through the symmetric kernel-3 convolutions (a causal one would not); tokens 0 and 1
    # do not (the scan runs forward only)
    assert not torch.allclose(a[:, 2], b[:, 2])
    assert torch.equal(a[:, :2], b[:, :2])


@pytest.mark.parametrize('method', METHODS)
def test_mixer_every_discretization_backpropagates(method):
    torch.manual_seed(0)
    mixer = MambaVisionMixer(32, discretization=method)
    mixer(torch.randn(2, 11, 32)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mixer.parameters())


@pytest.mark.parametrize('kwargs, match', [
    (dict(embed_dims=0), 'embed_dims must be a positive int, got 0'),
    (dict(embed_dims=8, d_state=0), 'd_state must be a positive int'),
    (dict(embed_dims=8, discretization='euler'), "unknown discretization 'euler'"),
    (dict(embed_dims=8, expand=0.125), r'int\(expand \* embed_dims\) = 1 must be an even number'),
    (dict(embed_dims=8, dt_rank=0), "dt_rank must be a positive int or 'auto', got 0"),
])
def test_mixer_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MambaVisionMixer(**kwargs)


def test_layer_norm_2d_normalizes_each_pixel_over_channels():
    norm = randomized(LayerNorm2d(6))
    x = torch.randn(2, 6, 5, 7)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)
    with pytest.raises(ValueError, match=r'expected a \(batch, 6, H, W\) map, got \(2, 5, 5, 7\)'):
        norm(torch.randn(2, 5, 5, 7))


def test_windows_round_trip_and_token_order():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    padded = pad_to_windows(x, 3)
    assert padded.shape == (2, 3, 6, 9) and torch.equal(padded[:, :, :5, :7], x) and padded[:, :, 5:].eq(0).all()
    windows = window_partition(padded, 3)
    assert windows.shape == (2 * 2 * 3, 9, 3)
    # window (image 1, row 1, column 2), its tokens row by row
    torch.testing.assert_close(windows[6 + 3 + 2], padded[1, :, 3:6, 6:9].reshape(3, 9).T)
    assert torch.equal(window_merge(windows, 3, 6, 9), padded)
    with pytest.raises(ValueError, match='not a multiple of window_size=3; pad it first'):
        window_partition(x, 3)


def test_self_attention_matches_an_explicit_softmax():
    torch.manual_seed(0)
    attention = randomized(MultiheadSelfAttention(12, num_heads=3)).double()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    q, k, v = attention.qkv(x).reshape(2, 5, 3, 3, 4).permute(2, 0, 3, 1, 4)
    expected = (torch.softmax(q @ k.transpose(-1, -2) / 2, dim=-1) @ v).transpose(1, 2).reshape(2, 5, 12)
    torch.testing.assert_close(attention(x), attention.proj(expected))
    with pytest.raises(ValueError, match='num_heads must be a positive int dividing embed_dims=12, got 5'):
        MultiheadSelfAttention(12, 5)
