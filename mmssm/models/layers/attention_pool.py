import torch
import torch.nn.functional as F
from torch import nn

from mmssm.registry import MODELS


@MODELS.register_module()
class AttentionPool(nn.Module):
    """Attention pooling: learned queries attend over all tokens of a feature map (CLIP / CoaT-style pooling, with
    learned queries in place of CLIP's mean token and fixed-size position table, so any input size works).

    Keys and values are the LayerNorm'ed tokens; each of ``num_queries`` queries attends with ``num_heads`` heads;
    the queries' outputs go through an output projection and are averaged (``reduce='mean'``) or returned.

    Args:
        embed_dims (int): token channels C.
        num_heads (int): heads; must divide C. Default: 8 (or C when C < 8).
        num_queries (int): learned queries. Default: 1.
        reduce (str): 'mean' over the queries, giving (batch, C), or 'none', giving (batch, num_queries, C).
        qkv_bias (bool): bias of the q, k, v projections. Default: True.

    Input: (batch, C, H, W) maps or (batch, L, C) tokens, any H, W, L >= 1 and batch.
    """

    def __init__(self, embed_dims: int, num_heads: int | None = None, num_queries: int = 1, reduce: str = 'mean',
                 qkv_bias: bool = True):
        super().__init__()
        if not isinstance(embed_dims, int) or embed_dims <= 0:
            raise ValueError(f'AttentionPool: embed_dims must be a positive int, got {embed_dims!r}.')
        if num_heads is None:
            num_heads = min(8, embed_dims) if embed_dims % min(8, embed_dims) == 0 else 1
        if not isinstance(num_heads, int) or num_heads <= 0 or embed_dims % num_heads:
            raise ValueError(f'AttentionPool: num_heads must be a positive int dividing embed_dims={embed_dims}, '
                             f'got {num_heads!r}.')
        if not isinstance(num_queries, int) or num_queries <= 0:
            raise ValueError(f'AttentionPool: num_queries must be a positive int, got {num_queries!r}.')
        if reduce not in ('mean', 'none'):
            raise ValueError(f"AttentionPool: reduce must be 'mean' or 'none', got {reduce!r}.")
        self.embed_dims, self.num_heads, self.num_queries, self.reduce = embed_dims, num_heads, num_queries, reduce
        self.head_dims = embed_dims // num_heads
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dims))
        self.norm = nn.LayerNorm(embed_dims)
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        nn.init.trunc_normal_(self.query, std=0.02, a=-0.04, b=0.04)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: optional (batch, L) bools, True for the tokens that may be attended to (each row needs one)."""
        if x.dim() == 4:
            if x.shape[1] != self.embed_dims:
                raise ValueError(f'AttentionPool: expected a (batch, {self.embed_dims}, H, W) map, got '
                                 f'{tuple(x.shape)}.')
            x = x.flatten(2).transpose(1, 2)
        elif x.dim() != 3 or x.shape[-1] != self.embed_dims:
            raise ValueError(f'AttentionPool: expected (batch, {self.embed_dims}, H, W) or (batch, L, '
                             f'{self.embed_dims}), got {tuple(x.shape)}.')
        if x.shape[1] == 0:
            raise ValueError(f'AttentionPool: got no tokens to pool (shape {tuple(x.shape)}).')
        batch, length, channels = x.shape
        kv = self.kv(self.norm(x)).view(batch, length, 2, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        q = self.q(self.query).view(1, self.num_queries, self.num_heads, self.head_dims).transpose(1, 2)
        attn_mask = None
        if mask is not None:
            if mask.shape != (batch, length) or mask.dtype != torch.bool:
                raise ValueError(f'AttentionPool: mask must be ({batch}, {length}) bools, got {tuple(mask.shape)} '
                                 f'{mask.dtype}.')
            attn_mask = mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q.expand(batch, -1, -1, -1).to(kv.dtype), kv[0], kv[1],
                                             attn_mask=attn_mask)
        out = self.proj(out.transpose(1, 2).reshape(batch, self.num_queries, channels))
        return out.mean(1) if self.reduce == 'mean' else out

    def extra_repr(self) -> str:
        return f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, num_queries={self.num_queries}'


@MODELS.register_module()
class AttentionPoolDownsample(nn.Module):
    """Downsampling by attention pooling (vim_ssm_cv24's replacement of MambaVision's strided convolution): each
    output pixel pools the ``kernel_size`` x ``kernel_size`` neighbourhood around its input position (stride 2,
    the strided convolution's geometry, so output sizes are the same: ceil(H / 2) x ceil(W / 2)) with
    :class:`AttentionPool`, positions outside the map masked out, then a linear layer maps C to ``out_channels``.

    Args:
        in_channels (int): C.
        out_channels (int): channels of the output map. Default: 2C.
        kernel_size (int): odd neighbourhood size. Default: 3.
        num_heads (int, optional): heads of the pooling.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, kernel_size: int = 3,
                 num_heads: int | None = None):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'AttentionPoolDownsample: kernel_size must be an odd positive int, got '
                             f'{kernel_size!r}.')
        self.in_channels, self.kernel_size = in_channels, kernel_size
        self.out_channels = out_channels or 2 * in_channels
        self.pool = AttentionPool(in_channels, num_heads=num_heads)
        self.proj = nn.Linear(in_channels, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        k, pad = self.kernel_size, self.kernel_size // 2
        out_h, out_w = (height + 2 * pad - k) // 2 + 1, (width + 2 * pad - k) // 2 + 1
        patches = F.unfold(x, k, padding=pad, stride=2)  # (batch, C * k * k, out_h * out_w)
        tokens = patches.view(batch, channels, k * k, -1).permute(0, 3, 2, 1).reshape(-1, k * k, channels)
        valid = F.unfold(x.new_ones(1, 1, height, width), k, padding=pad, stride=2)[0].T > 0  # (positions, k*k)
        pooled = self.pool(tokens, mask=valid.repeat(batch, 1))
        return self.proj(pooled).view(batch, out_h, out_w, self.out_channels).permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return f'{self.in_channels} -> {self.out_channels}, kernel_size={self.kernel_size}'
