import pytest
import torch

from mmssm.ops.causal_conv1d import causal_conv1d


@pytest.mark.parametrize('kernel', [1, 3, 4])
@pytest.mark.parametrize('length', [1, 2, 9])
def test_causal_and_reverse(kernel, length):
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 5, length), torch.randn(5, 1, kernel), torch.randn(5)
    conv = torch.nn.Conv1d(5, 5, kernel, groups=5, padding=kernel - 1)
    with torch.no_grad():
        conv.weight.copy_(w), conv.bias.copy_(b)
    expected = conv(x)[..., :length]  # Mamba's formulation
    torch.testing.assert_close(causal_conv1d(x, w, b), expected)
    # reversed: flip the sequence, convolve causally, flip back (Vim's backward direction)
    flipped = conv(x.flip(-1))[..., :length].flip(-1)
    torch.testing.assert_close(causal_conv1d(x, w, b, reverse=True), flipped)
    torch.testing.assert_close(causal_conv1d(x, w[:, 0], b, activation='silu'), torch.nn.functional.silu(expected))


def test_bad_arguments():
    with pytest.raises(ValueError, match='activation'):
        causal_conv1d(torch.randn(1, 2, 3), torch.randn(2, 3), activation='relu')
    with pytest.raises(ValueError, match=r'\(dim, K\)'):
        causal_conv1d(torch.randn(1, 2, 3), torch.randn(3, 3))
