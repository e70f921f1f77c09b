import torch
import torch.nn.functional as F

from .precision import at_least_fp32


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: tuple, dst_grid: tuple, cls_index: int | None = None,
                     mode: str = 'bicubic') -> torch.Tensor:
    """Resize a (1, T, C) absolute position embedding laid out on a patch grid to another grid.

    Args:
        pos_embed: (1, rows*cols [+1], C). When ``cls_index`` is not None the class token's embedding sits at that
            index (0 for a head token, ``rows*cols // 2`` for Vim's middle token) and is kept as it is.
        src_grid: (rows, cols) of ``pos_embed``.
        dst_grid: (rows, cols) wanted.
        cls_index: index of the class token's embedding in ``pos_embed``, or None.
        mode: interpolation mode of ``F.interpolate``.

    Returns:
        (1, dst_rows*dst_cols [+1], C); the class token's embedding, if any, is placed at the same relative spot
        (0, or the middle ``dst_rows*dst_cols // 2``).
    """
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    num_src = src_grid[0] * src_grid[1]
    expected = num_src + (cls_index is not None)
    if pos_embed.dim() != 3 or pos_embed.shape[:2] != (1, expected):
        raise ValueError(
            f'resize_pos_embed: pos_embed of shape {tuple(pos_embed.shape)} does not fit the grid {src_grid} '
            f'{"with" if cls_index is not None else "without"} a class token (expected (1, {expected}, C)).')
    if cls_index is not None:
        cls_embed = pos_embed[:, cls_index:cls_index + 1]
        grid_embed = torch.cat([pos_embed[:, :cls_index], pos_embed[:, cls_index + 1:]], dim=1)
    else:
        grid_embed = pos_embed
    if src_grid != dst_grid:
        channels = grid_embed.shape[-1]
        grid_embed = grid_embed.reshape(1, *src_grid, channels).permute(0, 3, 1, 2)
        # bicubic in half precision loses the table
        grid_embed = F.interpolate(at_least_fp32(grid_embed), size=dst_grid, mode=mode, align_corners=False)
        grid_embed = grid_embed.to(pos_embed.dtype).flatten(2).transpose(1, 2)
    if cls_index is None:
        return grid_embed
    dst_index = 0 if cls_index == 0 else grid_embed.shape[1] // 2
    return torch.cat([grid_embed[:, :dst_index], cls_embed, grid_embed[:, dst_index:]], dim=1)
