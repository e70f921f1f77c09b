"""Non-overlapping square windows over an NCHW map, with the padding that lets any map size be split."""
import torch
import torch.nn.functional as F


def pad_to_windows(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Zero-pad the bottom and right of (B, C, H, W) to multiples of ``window_size``."""
    pad_b = -x.shape[-2] % window_size
    pad_r = -x.shape[-1] % window_size
    return F.pad(x, (0, pad_r, 0, pad_b)) if pad_b or pad_r else x


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, C, H, W), H and W multiples of ``window_size`` -> (B * windows, window_size ** 2, C).

    Windows are ordered by image, then row, then column; the tokens of a window row by row. The result is
    contiguous: with one window per map the permute would otherwise stay a view with channel stride H * W, and
    every LayerNorm and residual add of the blocks after it would copy or run strided."""
    batch, channels, height, width = x.shape
    if height % window_size or width % window_size:
        raise ValueError(f'window_partition: map {height}x{width} is not a multiple of window_size={window_size}; '
                         f'pad it first (pad_to_windows).')
    x = x.reshape(batch, channels, height // window_size, window_size, width // window_size, window_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window_size * window_size, channels).contiguous()


def window_merge(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (B * windows, window_size ** 2, C) -> (B, C, height, width)."""
    rows, cols = height // window_size, width // window_size
    channels = windows.shape[-1]
    x = windows.reshape(-1, rows, cols, window_size, window_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, channels, height, width)
