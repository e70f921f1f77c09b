import pytest
import torch
import torch.nn.functional as F

from mmssm.models.layers import resize_pos_embed


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.bfloat16])
def test_resize_keeps_float64_and_computes_low_precision_in_float32(dtype):
    """A float64 table is resized in float64 (the float64 CPU-vs-CUDA parity tests differed by float32 rounding
    when it went through float32); lower precisions are interpolated in float32 and cast back."""
    table = torch.randn(1, 1 + 4 * 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = resize_pos_embed(table.to(dtype), (4, 5), (7, 9), cls_index=0)
    assert out.dtype == dtype and out.shape == (1, 1 + 63, 6)
    grid = table[:, 1:].to(dtype).to(torch.promote_types(dtype, torch.float32))
    grid = grid.reshape(1, 4, 5, 6).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(7, 9), mode='bicubic', align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out[:, 1:], expected.to(dtype), rtol=0, atol=0)
    assert torch.equal(out[:, :1], table[:, :1].to(dtype))
