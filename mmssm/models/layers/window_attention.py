"""Attention variants for the window tokens of a MambaVision hybrid stage: shifted windows (Swin), neighbourhood
attention (NATTEN-style, pure torch) and CoaT's factorized attention with convolutional relative position encoding.

Every module takes the stage's tokens ``x`` of shape (B * windows, R + ws * ws, C) -- R register tokens first, then
each window's tokens row by row, windows ordered as :func:`~mmssm.models.layers.window.window_partition` orders
them over the zero-padded (Hp, Wp) map -- and a :class:`WindowGeometry` that says where the real map ends, and
returns tokens of the same shape. Unlike the official window attention (which lets padding take part), these
modules never let a padding token's key or value reach a real token's output; padding tokens get some output (they
are cropped by the stage) and register tokens see the real tokens of their own window.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .window import window_merge, window_partition


class WindowGeometry(NamedTuple):
    """The real map size (height, width) of a stage padded to whole windows, and its register count."""
    height: int
    width: int
    window_size: int
    num_registers: int = 0

    @property
    def padded(self):
        ws = self.window_size
        return -(-self.height // ws) * ws, -(-self.width // ws) * ws


def valid_windows(geometry: WindowGeometry, device, shift=(0, 0)) -> torch.Tensor:
    """(windows, ws * ws) bool: which window tokens are real (not padding), after rolling the map by -shift."""
    hp, wp = geometry.padded
    rows = torch.arange(hp, device=device)[:, None] < geometry.height
    cols = torch.arange(wp, device=device)[None, :] < geometry.width
    valid = (rows & cols).float()[None, None]
    if shift != (0, 0):
        valid = valid.roll((-shift[0], -shift[1]), dims=(2, 3))
    return window_partition(valid, geometry.window_size)[..., 0] > 0.5


class _WindowTokenAttention(nn.Module):
    """Shared parts: ``qkv`` and ``proj`` projections as in :class:`MultiheadSelfAttention`, scale head_dim ** -0.5."""

    def __init__(self, embed_dims, num_heads, qkv_bias=True, attn_drop=0., proj_drop=0.):
        super().__init__()
        if not isinstance(num_heads, int) or num_heads <= 0 or embed_dims % num_heads:
            raise ValueError(f'{type(self).__name__}: num_heads must be a positive int dividing embed_dims='
                             f'{embed_dims}, got {num_heads!r}.')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.scale = self.head_dims ** -0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x):
        """(n, L, C) -> q, k, v of shape (n, heads, L, head_dims)."""
        n, length, _ = x.shape
        return self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4).unbind(0)

    def _out(self, x):
        """(n, heads, L, head_dims) -> projected (n, L, C)."""
        n, _, length, _ = x.shape  # heads * head_dims channels: fewer than embed_dims after head pruning
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(n, length, -1)))

    def _dropout_p(self):
        return self.attn_drop if self.training else 0.

    def extra_repr(self) -> str:
        return f'embed_dims={self.embed_dims}, num_heads={self.num_heads}'


def _roll_tokens(x, geometry, shift):
    """Roll the spatial window tokens (n, ws * ws, C) of the padded map by -shift and re-partition."""
    ws = geometry.window_size
    hp, wp = geometry.padded
    full = window_merge(x, ws, hp, wp).roll((-shift[0], -shift[1]), dims=(2, 3))
    return window_partition(full, ws)


class ShiftedWindowAttention(_WindowTokenAttention):
    """Swin's (shifted) window attention over window tokens.

    With ``shift``, the padded map is rolled by -s = -(ws // 2) along each axis whose padded size exceeds one window
    (a single window would gain nothing), attention runs in the windows of the rolled map, and the result is rolled
    back. Query q may attend to key k when both lie in the same band of the shifted grid along each axis, the bands
    being [0, s), [s, s + ws), ..., [Hp - ws + s, Hp) of the un-rolled padded map (so tokens brought together by the
    cyclic roll never meet), and k is a real token or q is a padding token (padding never reaches a real token;
    padding queries read padding of their band, so no row is empty). Registers attend to the real tokens of their
    window and to the registers; every token attends to its window's registers:
    ``out_q = sum_k softmax_k(q . k / sqrt(d) + M_qk) v_k`` with M = 0 where allowed and -inf elsewhere.
    Without ``shift`` the same rule holds with one band per window (padding still masked).
    """

    def __init__(self, embed_dims, num_heads, shift=False, qkv_bias=True, attn_drop=0., proj_drop=0.):
        super().__init__(embed_dims, num_heads, qkv_bias, attn_drop, proj_drop)
        self.shift = shift

    def _shifts(self, geometry):
        hp, wp = geometry.padded
        s = geometry.window_size // 2 if self.shift else 0
        return (s if hp > geometry.window_size else 0), (s if wp > geometry.window_size else 0)

    def attention_mask(self, geometry: WindowGeometry, device) -> torch.Tensor:
        """(windows, R + N, R + N) bool, True where a query (row) may attend to a key (column)."""
        ws, reg = geometry.window_size, geometry.num_registers
        hp, wp = geometry.padded
        shift = self._shifts(geometry)
        band_h = torch.zeros(hp, device=device)
        band_w = torch.zeros(wp, device=device)
        if shift[0]:
            band_h[hp - ws:hp - shift[0]] = 1
            band_h[hp - shift[0]:] = 2
        if shift[1]:
            band_w[wp - ws:wp - shift[1]] = 1
            band_w[wp - shift[1]:] = 2
        # Swin's labels, on the rolled map: its last s rows / columns are the wrapped-around first ones
        label = window_partition((band_h[:, None] * 3 + band_w[None, :])[None, None], ws)[..., 0]
        valid = valid_windows(geometry, device, shift)
        spatial = (label[:, :, None] == label[:, None, :]) & (valid[:, None, :] | ~valid[:, :, None])
        windows = spatial.shape[0]
        mask = torch.ones(windows, reg + ws * ws, reg + ws * ws, dtype=torch.bool, device=device)
        mask[:, reg:, reg:] = spatial
        mask[:, :reg, reg:] = valid[:, None, :]
        return mask

    def forward(self, x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
        reg = geometry.num_registers
        shift = self._shifts(geometry)
        if shift != (0, 0):
            x = torch.cat([x[:, :reg], _roll_tokens(x[:, reg:], geometry, shift)], dim=1)
        mask = self.attention_mask(geometry, x.device)
        mask = mask.repeat(x.shape[0] // mask.shape[0], 1, 1)[:, None]
        q, k, v = self._heads(x)
        out = self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self._dropout_p()))
        if shift != (0, 0):
            out = torch.cat([out[:, :reg], _roll_tokens(out[:, reg:], geometry, (-shift[0], -shift[1]))], dim=1)
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f', shift={self.shift}'


def neighbourhood_index(size: int, kernel_size: int, device) -> torch.Tensor:
    """(size, min(k, size)) long: the keys of each position along one axis, NATTEN's clamped neighbourhood
    [i - k // 2, i - k // 2 + k) moved inside [0, size) (so a border token keeps k neighbours)."""
    k = min(kernel_size, size)
    start = (torch.arange(size, device=device) - kernel_size // 2).clamp(0, size - k)
    return start[:, None] + torch.arange(k, device=device)[None, :]


class NeighbourhoodAttention(_WindowTokenAttention):
    """Neighbourhood (sliding-window) attention (Hassani et al., NAT), in pure torch.

    Each real token (i, j) of the H x W map attends to the k x k keys (k = ``kernel_size``, the stage's window
    size) ``rows(i) x cols(j)`` of :func:`neighbourhood_index`: centred on it, clamped at the borders as NATTEN does
    (a border token attends to the k x k block touching the border, never to padding; k is cut to H or W on a
    smaller map), plus the registers of its window: ``out_q = sum_{k in N(q)} softmax(q . k / sqrt(d)) v_k``.
    Registers attend to the real tokens of their window and to the registers. Padding tokens get a zero attention
    output. Memory: keys and values are gathered as (B, H, W, k, k, C); when the neighbourhood covers the whole map
    this is plain full attention over the real tokens.
    """

    def __init__(self, embed_dims, num_heads, kernel_size, qkv_bias=True, attn_drop=0., proj_drop=0.):
        super().__init__(embed_dims, num_heads, qkv_bias, attn_drop, proj_drop)
        if not isinstance(kernel_size, int) or kernel_size <= 0:
            raise ValueError(f'NeighbourhoodAttention: kernel_size must be a positive int, got {kernel_size!r}.')
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
        reg, ws = geometry.num_registers, geometry.window_size
        height, width = geometry.height, geometry.width
        hp, wp = geometry.padded
        n = x.shape[0]
        channels = self.num_heads * self.head_dims  # embed_dims unless heads were pruned
        q, k, v = self._heads(x)  # (n, heads, R + N, d)

        def to_map(t):  # spatial part -> (B, heads, H, W, d)
            t = t[:, :, reg:].transpose(1, 2).reshape(n, ws * ws, channels)
            t = window_merge(t, ws, hp, wp)[:, :, :height, :width]
            return t.reshape(-1, self.num_heads, self.head_dims, height, width).permute(0, 1, 3, 4, 2)

        qm, km, vm = to_map(q), to_map(k), to_map(v)
        batch = qm.shape[0]
        rows = neighbourhood_index(height, self.kernel_size, x.device)
        cols = neighbourhood_index(width, self.kernel_size, x.device)
        kn = km[:, :, rows][:, :, :, :, cols]  # (B, h, H, kh, W, kw, d)
        vn = vm[:, :, rows][:, :, :, :, cols]
        logits = torch.einsum('bhiwd,bhiawcd->bhiwac', qm, kn).flatten(-2) * self.scale  # (B, h, H, W, kh * kw)
        values = vn.permute(0, 1, 2, 4, 3, 5, 6).flatten(4, 5)  # (B, h, H, W, kh * kw, d)
        if reg:
            win_rows, win_cols = hp // ws, wp // ws
            window_id = (torch.arange(height, device=x.device)[:, None] // ws * win_cols
                         + torch.arange(width, device=x.device)[None, :] // ws)
            rk = k[:, :, :reg].reshape(batch, win_rows * win_cols, self.num_heads, reg, self.head_dims)
            rv = v[:, :, :reg].reshape(batch, win_rows * win_cols, self.num_heads, reg, self.head_dims)
            rk = rk[:, window_id].permute(0, 3, 1, 2, 4, 5)  # (B, h, H, W, R, d)
            rv = rv[:, window_id].permute(0, 3, 1, 2, 4, 5)
            logits = torch.cat([logits, torch.einsum('bhiwd,bhiwrd->bhiwr', qm, rk) * self.scale], dim=-1)
            values = torch.cat([values, rv], dim=-2)
        weights = F.dropout(logits.softmax(-1), self._dropout_p(), self.training)
        out_map = torch.einsum('bhiwk,bhiwkd->bhiwd', weights, values)  # (B, h, H, W, d)
        out_map = out_map.permute(0, 1, 4, 2, 3).reshape(batch, channels, height, width)
        out_map = F.pad(out_map, (0, wp - width, 0, hp - height))
        out = window_partition(out_map, ws).reshape(n, ws * ws, self.num_heads, self.head_dims).transpose(1, 2)
        if reg:
            valid = valid_windows(geometry, x.device).repeat(batch, 1)
            key_mask = torch.cat([valid.new_ones(n, reg), valid], dim=1)[:, None, None]
            reg_out = F.scaled_dot_product_attention(q[:, :, :reg], k, v, attn_mask=key_mask,
                                                     dropout_p=self._dropout_p())
            out = torch.cat([reg_out, out], dim=2)
        return self._out(out)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', kernel_size={self.kernel_size}'


class ConvRelPosAttention(_WindowTokenAttention):
    """CoaT's factorized attention with convolutional relative position encoding (Xu et al., ICCV 2021), per window.

    ``FactorAtt(Q, K, V) = Q / sqrt(d) (softmax(K)^T V)``, the softmax taken over the tokens (keys) of the window,
    costs O(N d^2) instead of O(N^2 d); CoaT adds ``EV = Q * DWConv(V)`` (elementwise), a depthwise k x k
    convolution of the values over the window's ws x ws grid (zero outside the window), so that
    ``out = FactorAtt(Q, K, V) + Q * DWConv(V)``. Padding keys are excluded from the softmax and padding values are
    zeroed before the convolution, so padding never reaches a real token. Register tokens take part in the factorized
    attention as keys, values and queries; they have no grid position, so their EV term is zero.
    """

    def __init__(self, embed_dims, num_heads, kernel_size=3, qkv_bias=True, attn_drop=0., proj_drop=0.):
        super().__init__(embed_dims, num_heads, qkv_bias, attn_drop, proj_drop)
        if not isinstance(kernel_size, int) or kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f'ConvRelPosAttention: kernel_size must be a positive odd int, got {kernel_size!r}.')
        self.kernel_size = kernel_size
        self.crpe = nn.Conv2d(embed_dims, embed_dims, kernel_size, padding=kernel_size // 2, groups=embed_dims)

    def forward(self, x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
        reg, ws = geometry.num_registers, geometry.window_size
        n = x.shape[0]
        q, k, v = self._heads(x)
        valid = valid_windows(geometry, x.device)
        valid = valid.repeat(n // valid.shape[0], 1)
        key_valid = torch.cat([valid.new_ones(n, reg), valid], dim=1)[:, None, :, None]  # (n, 1, R + N, 1)
        k_soft = k.masked_fill(~key_valid, float('-inf')).softmax(dim=2)
        context = torch.einsum('bhnk,bhnv->bhkv', k_soft, v)
        out = torch.einsum('bhnk,bhkv->bhnv', q, context) * self.scale
        v_img = v[:, :, reg:].masked_fill(~key_valid[:, :, reg:], 0.)
        v_img = v_img.permute(0, 1, 3, 2).reshape(n, self.num_heads * self.head_dims, ws, ws)
        conv_v = self.crpe(v_img).reshape(n, self.num_heads, self.head_dims, ws * ws).transpose(2, 3)
        out = torch.cat([out[:, :, :reg], out[:, :, reg:] + q[:, :, reg:] * conv_v], dim=2)
        return self._out(out)

    def extra_repr(self) -> str:
        return super().extra_repr() + f', kernel_size={self.kernel_size}'
