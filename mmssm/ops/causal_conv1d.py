"""Depthwise causal 1-D convolution over a token sequence: Mamba's short convolution.

On CUDA tensors the ``causal_conv1d`` package is used when it is importable (it is an optional dependency,
``pip install mmssm[cuda]``); everywhere else the same function is computed with ``F.conv1d``.
"""
import torch
import torch.nn.functional as F

try:  # optional fast path
    from causal_conv1d import causal_conv1d_fn as _causal_conv1d_cuda
except ImportError:  # pragma: no cover - depends on the environment
    _causal_conv1d_cuda = None

ACTIVATIONS = (None, 'silu')


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str | None = None, reverse: bool = False) -> torch.Tensor:
    """Depthwise convolution in which step t sees steps t-K+1..t (``reverse=False``) or t..t+K-1 (``reverse=True``).

    ``reverse=True`` equals flipping the sequence, convolving causally and flipping back, which is what the
    backward direction of a bidirectional Vim block computes; here it is done without the two flips.

    Args:
        x: (batch, dim, L).
        weight: (dim, K) or (dim, 1, K), as stored by ``nn.Conv1d(dim, dim, K, groups=dim)``.
        bias: optional (dim,).
        activation: None or 'silu', applied after the convolution.
        reverse: convolve towards the end of the sequence instead of its start.

    Returns:
        (batch, dim, L), the dtype of x.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f'causal_conv1d: activation must be one of {ACTIVATIONS}, got {activation!r}.')
    if x.dim() != 3:
        raise ValueError(f'causal_conv1d: x must have shape (batch, dim, L), got {tuple(x.shape)}.')
    if weight.dim() == 3:
        weight = weight.squeeze(1)
    if weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f'causal_conv1d: weight must have shape (dim, K) or (dim, 1, K) with dim={x.shape[1]}, '
            f'got {tuple(weight.shape)}.')
    if bias is not None and bias.shape != (x.shape[1],):
        raise ValueError(f'causal_conv1d: bias must have shape ({x.shape[1]},), got {tuple(bias.shape)}.')
    kernel = weight.shape[1]
    if (_causal_conv1d_cuda is not None and x.is_cuda and 2 <= kernel <= 4
            and x.dtype in (torch.float16, torch.bfloat16, torch.float32)):
        if reverse:
            return _causal_conv1d_cuda(x.flip(-1), weight, bias, activation=activation).flip(-1)
        return _causal_conv1d_cuda(x.contiguous(), weight, bias, activation=activation)
    if reverse:
        out = F.conv1d(F.pad(x, (0, kernel - 1)), weight.flip(-1).unsqueeze(1), bias, groups=x.shape[1])
    else:
        out = F.conv1d(F.pad(x, (kernel - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    return F.silu(out) if activation == 'silu' else out
