import torch
import torch.nn.functional as F
from torch import nn


class MultiheadSelfAttention(nn.Module):
    """Multi-head self-attention over (batch, L, C) tokens: one ``qkv`` projection, scaled dot-product attention
    (scale head_dim ** -0.5, torch's fused kernel where it has one) and an output projection ``proj``.

    Args:
        embed_dims (int): token channels C.
        num_heads (int): heads; must divide C.
        qkv_bias (bool): bias of the qkv projection. Default: True.
        attn_drop (float): dropout on the attention weights, while training only. Default: 0.
        proj_drop (float): dropout after the output projection. Default: 0.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        if not isinstance(num_heads, int) or num_heads <= 0 or embed_dims % num_heads:
            raise ValueError(f'MultiheadSelfAttention: num_heads must be a positive int dividing embed_dims='
                             f'{embed_dims}, got {num_heads!r}.')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, channels = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.)
        x = x.transpose(1, 2).reshape(batch, length, -1)  # heads * head_dims: fewer after head pruning
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f'embed_dims={self.embed_dims}, num_heads={self.num_heads}'
