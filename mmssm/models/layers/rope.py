import torch
from torch import nn


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): the 90-degree rotation of each channel pair."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


class VisionRoPE2d(nn.Module):
    """2-D rotary position embedding over the channels of patch tokens (EVA-02 style, as in Vim).

    The first half of the channels rotates with the row index, the second half with the column index; each half
    uses ``embed_dims // 4`` frequencies ``theta ** (-4k / embed_dims)``, each for one channel pair. Positions are
    scaled to the grid the model was trained on (``index / grid * train_grid``), so a larger input keeps the
    trained range of angles. The angles are computed for the actual grid on each call (and cached), so any input
    size works; no buffers are stored in checkpoints.

    Args:
        embed_dims (int): channels; a multiple of 4.
        train_grid (tuple[int, int]): patch grid (rows, cols) at the training resolution.
        theta (float): frequency base. Default: 10000.
    """

    def __init__(self, embed_dims: int, train_grid: tuple, theta: float = 10000.):
        super().__init__()
        if embed_dims % 4 != 0:
            raise ValueError(f'VisionRoPE2d: embed_dims must be a multiple of 4 for 2-D RoPE, got {embed_dims}.')
        self.embed_dims = embed_dims
        self.train_grid = tuple(train_grid)
        quarter = embed_dims // 4
        self.register_buffer(
            'inv_freq', theta ** (-torch.arange(quarter, dtype=torch.float64) / quarter), persistent=False)
        self._cache = {}

    def cos_sin(self, grid: tuple, device, dtype):
        key = (tuple(grid), device, dtype)
        if key not in self._cache:
            angles = []
            for size, trained in zip(grid, self.train_grid):
                position = torch.arange(size, dtype=torch.float64, device=self.inv_freq.device) / size * trained
                angles.append((position[:, None] * self.inv_freq[None]).repeat_interleave(2, dim=-1))
            rows, cols = grid
            angle = torch.cat([angles[0][:, None].expand(rows, cols, -1),
                               angles[1][None].expand(rows, cols, -1)], dim=-1).reshape(rows * cols, -1)
            self._cache = {key: (angle.cos().to(device, dtype), angle.sin().to(device, dtype))}
        return self._cache[key]

    def forward(self, tokens: torch.Tensor, grid: tuple) -> torch.Tensor:
        """Rotate (batch, rows*cols, embed_dims) patch tokens laid out row-major on ``grid``."""
        cos, sin = self.cos_sin(grid, tokens.device, tokens.dtype)
        return tokens * cos + rotate_pairs(tokens) * sin
