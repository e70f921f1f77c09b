"""The window-token attention variants against explicit per-token float64 references: for every query the test
builds the set of keys it may attend to from the variant's definition (not from the module's masks or rolls)."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmssm.models.layers import ConvRelPosAttention, NeighbourhoodAttention, ShiftedWindowAttention, WindowGeometry

DIMS, HEADS = 8, 2


def tokens_and_positions(batch, geometry, seed=0):
    """Random window tokens (B * windows, R + ws^2, C) in float64 and, per token, (batch, window, kind, i, j):
    kind 'reg' or 'map', (i, j) the position in the un-rolled padded map (-1 for registers)."""
    torch.manual_seed(seed)
    ws, reg = geometry.window_size, geometry.num_registers
    hp, wp = geometry.padded
    cols = wp // ws
    windows = (hp // ws) * cols
    x = torch.randn(batch * windows, reg + ws * ws, DIMS, dtype=torch.float64)
    meta = {}
    for n in range(batch * windows):
        b, w = divmod(n, windows)
        for p in range(reg + ws * ws):
            if p < reg:
                meta[n, p] = (b, w, 'reg', -1, -1)
            else:
                a, c = divmod(p - reg, ws)
                meta[n, p] = (b, w, 'map', w // cols * ws + a, w % cols * ws + c)
    return x, meta


def reference(module, x, meta, allowed, extra=None):
    """out[t] = proj(sum over allowed keys of softmax(q.k * scale) v) per head, query by query; ``extra(t, q, v)``
    adds a per-token term before the projection; a query with no key gets zero."""
    n, length, _ = x.shape
    qkv = module.qkv(x).reshape(n, length, 3, HEADS, DIMS // HEADS)
    q, k, v = qkv.unbind(2)
    scale = (DIMS // HEADS) ** -0.5
    keys = list(meta)
    mask = torch.tensor([[allowed(meta[t], meta[s]) for s in keys] for t in keys])
    q_all, k_all, v_all = (torch.stack([z[t] for t in keys], 1) for z in (q, k, v))  # (heads, tokens, d)
    logits = (q_all @ k_all.transpose(1, 2) * scale).masked_fill(~mask, float('-inf'))
    weights = torch.where(mask.any(1)[:, None], logits.softmax(-1), 0.).nan_to_num()
    out_all = weights @ v_all
    out = torch.zeros(n, length, HEADS, DIMS // HEADS, dtype=x.dtype)
    for index, t in enumerate(keys):
        out[t] = out_all[:, index]
        if extra is not None:
            out[t] = out[t] + extra(t, q, v)
    return module.proj(out.reshape(n, length, DIMS))


def real(geometry, i, j):
    return i < geometry.height and j < geometry.width


def band(i, shift, window_size):
    """The band of the un-rolled shifted grid: boundaries at shift, shift + ws, shift + 2 ws, ..."""
    return 0 if i < shift else (i - shift) // window_size + 1


# (height, width, window_size, registers): divisible, non-divisible, map smaller than a window along one axis
GEOMETRIES = [(8, 8, 4, 0), (7, 10, 4, 0), (7, 10, 4, 2), (3, 9, 4, 1)]


def shifted_allowed(geometry, shift_on):
    ws = geometry.window_size
    hp, wp = geometry.padded
    sh = ws // 2 if shift_on and hp > ws else 0
    sw = ws // 2 if shift_on and wp > ws else 0
    cols = wp // ws

    def window_of(i, j):  # window index of the shifted grid
        return ((i - sh) % hp) // ws * cols + ((j - sw) % wp) // ws

    def allowed(query, key):
        qb, qw, qkind, qi, qj = query
        kb, kw, kkind, ki, kj = key
        if qb != kb:
            return False
        if qkind == 'reg':
            return (kkind == 'reg' and kw == qw) or (kkind == 'map' and window_of(ki, kj) == qw
                                                      and real(geometry, ki, kj))
        if kkind == 'reg':
            return kw == window_of(qi, qj)
        # with shift 0 the bands are the plain windows
        same = band(qi, sh, ws) == band(ki, sh, ws) and band(qj, sw, ws) == band(kj, sw, ws)
        return same and (real(geometry, ki, kj) or not real(geometry, qi, qj))

    return allowed


@pytest.mark.parametrize('shift', [False, True])
@pytest.mark.parametrize('height, width, ws, reg', GEOMETRIES)
def test_shifted_window_attention_matches_the_per_token_reference(shift, height, width, ws, reg):
    geometry = WindowGeometry(height, width, ws, reg)
    module = ShiftedWindowAttention(DIMS, HEADS, shift=shift).double()
    x, meta = tokens_and_positions(2, geometry)
    expected = reference(module, x, meta, shifted_allowed(geometry, shift))
    torch.testing.assert_close(module(x, geometry), expected)


def test_shifted_window_mask_is_needed(monkeypatch):
    geometry = WindowGeometry(7, 10, 4, 1)
    module = ShiftedWindowAttention(DIMS, HEADS, shift=True).double()
    x, meta = tokens_and_positions(1, geometry)
    expected = reference(module, x, meta, shifted_allowed(geometry, True))
    torch.testing.assert_close(module(x, geometry), expected)
    full = torch.ones_like(module.attention_mask(geometry, 'cpu'))
    monkeypatch.setattr(module, 'attention_mask', lambda *args: full)
    assert not torch.allclose(module(x, geometry), expected)


def test_shifted_window_keeps_padding_out_of_real_tokens():
    geometry = WindowGeometry(7, 10, 4, 1)
    module = ShiftedWindowAttention(DIMS, HEADS, shift=True).double()
    x, meta = tokens_and_positions(1, geometry)
    pad = torch.tensor([[meta[n, p][2] == 'map' and not real(geometry, *meta[n, p][3:]) for p in range(x.shape[1])]
                        for n in range(x.shape[0])])
    changed = x.clone()
    changed[pad] = torch.randn_like(changed[pad]) * 10
    keep = ~pad
    torch.testing.assert_close(module(changed, geometry)[keep], module(x, geometry)[keep])


def neighbourhood_allowed(geometry, kernel):
    ws = geometry.window_size
    cols = geometry.padded[1] // ws

    def start(i, size):
        k = min(kernel, size)
        first = i - kernel // 2
        if first < 0:
            first = 0
        if first + k > size:
            first = size - k
        return first, first + k

    def allowed(query, key):
        qb, qw, qkind, qi, qj = query
        kb, kw, kkind, ki, kj = key
        if qb != kb:
            return False
        if qkind == 'reg':
            return (kkind == 'reg' and kw == qw) or (kkind == 'map' and kw == qw and real(geometry, ki, kj))
        if not real(geometry, qi, qj):
            return False  # padding queries get a zero attention output
        if kkind == 'reg':
            return kw == qi // ws * cols + qj // ws
        lo_i, hi_i = start(qi, geometry.height)
        lo_j, hi_j = start(qj, geometry.width)
        return lo_i <= ki < hi_i and lo_j <= kj < hi_j

    return allowed


@pytest.mark.parametrize('kernel', [3, 4, 5])
@pytest.mark.parametrize('height, width, ws, reg', GEOMETRIES)
def test_neighbourhood_attention_matches_the_per_token_reference(kernel, height, width, ws, reg):
    geometry = WindowGeometry(height, width, ws, reg)
    module = NeighbourhoodAttention(DIMS, HEADS, kernel).double()
    x, meta = tokens_and_positions(2, geometry)
    expected = reference(module, x, meta, neighbourhood_allowed(geometry, kernel))
    torch.testing.assert_close(module(x, geometry), expected)


def test_neighbourhood_attention_border_tokens_keep_k_squared_keys():
    geometry = WindowGeometry(7, 10, 4)
    allowed = neighbourhood_allowed(geometry, 5)
    _, meta = tokens_and_positions(1, geometry)
    for query in meta.values():
        if real(geometry, query[3], query[4]):
            count = sum(allowed(query, key) for key in meta.values())
            assert count == 25
            assert allowed(query, query)


def conv_relative_allowed(geometry):
    def allowed(query, key):
        qb, qw, *_ = query
        kb, kw, kkind, ki, kj = key
        return qb == kb and qw == kw and (kkind == 'reg' or real(geometry, ki, kj))
    return allowed


def conv_relative_reference(module, x, meta, geometry):
    """CoaT: out = q / sqrt(d) (softmax_tokens(K)^T V) + q * dwconv(V), with the sums written out."""
    n, length, _ = x.shape
    d = DIMS // HEADS
    qkv = module.qkv(x).reshape(n, length, 3, HEADS, d)
    q, k, v = qkv.unbind(2)
    scale = d ** -0.5
    ws, reg = geometry.window_size, geometry.num_registers
    allowed = conv_relative_allowed(geometry)
    weight = module.crpe.weight.reshape(HEADS, d, module.kernel_size, module.kernel_size)
    bias = module.crpe.bias.reshape(HEADS, d)
    half = module.kernel_size // 2
    out = torch.zeros(n, length, HEADS, d, dtype=x.dtype)
    contexts = {}
    for (wn, p), query in meta.items():
        if wn not in contexts:  # every query of a window has the same keys
            keys = [s for s in range(length) if allowed(query, meta[wn, s])]
            soft = torch.stack([k[wn, s] for s in keys], 1).softmax(1)  # (heads, keys, d) over keys
            contexts[wn] = torch.einsum('hkc,hkv->hcv', soft, torch.stack([v[wn, s] for s in keys], 1))
        out[wn, p] = torch.einsum('hc,hcv->hv', q[wn, p], contexts[wn]) * scale
        if p >= reg:
            a, c = divmod(p - reg, ws)
            conv = bias.clone()
            for da in range(-half, half + 1):
                for dc in range(-half, half + 1):
                    if 0 <= a + da < ws and 0 <= c + dc < ws:
                        s = reg + (a + da) * ws + c + dc
                        if real(geometry, *meta[wn, s][3:]):
                            conv = conv + weight[:, :, da + half, dc + half] * v[wn, s]
            out[wn, p] = out[wn, p] + q[wn, p] * conv
    return module.proj(out.reshape(n, length, DIMS))


@pytest.mark.parametrize('height, width, ws, reg', GEOMETRIES)
def test_conv_relative_attention_matches_the_coat_reference(height, width, ws, reg):
    geometry = WindowGeometry(height, width, ws, reg)
    module = ConvRelPosAttention(DIMS, HEADS).double()
    torch.nn.init.normal_(module.crpe.bias)
    x, meta = tokens_and_positions(1, geometry)
    torch.testing.assert_close(module(x, geometry), conv_relative_reference(module, x, meta, geometry))


def test_conv_relative_attention_is_factorized_not_softmax_attention():
    # the EV term off, FactorAtt must equal q / sqrt(d) (softmax(K)^T V), which differs from softmax(QK^T) V
    geometry = WindowGeometry(4, 4, 4)
    module = ConvRelPosAttention(DIMS, HEADS).double()
    torch.nn.init.zeros_(module.crpe.weight)
    torch.nn.init.zeros_(module.crpe.bias)
    x, _ = tokens_and_positions(1, geometry)
    q, k, v = module.qkv(x).reshape(1, 16, 3, HEADS, DIMS // HEADS).permute(2, 0, 3, 1, 4)
    factor = q @ (k.softmax(2).transpose(2, 3) @ v) / math.sqrt(DIMS // HEADS)
    expected = module.proj(factor.transpose(1, 2).reshape(1, 16, DIMS))
    torch.testing.assert_close(module(x, geometry), expected)
    standard = module.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 16, DIMS))
    assert not torch.allclose(expected, standard)


@pytest.mark.parametrize('cls, kwargs, match', [
    (NeighbourhoodAttention, dict(kernel_size=0), 'kernel_size must be a positive int'),
    (ConvRelPosAttention, dict(kernel_size=4), 'kernel_size must be a positive odd int'),
    (ShiftedWindowAttention, dict(), 'num_heads must be a positive int dividing embed_dims=8'),
])
def test_bad_arguments(cls, kwargs, match):
    heads = 3 if cls is ShiftedWindowAttention else HEADS
    with pytest.raises(ValueError, match=match):
        cls(DIMS, heads, **kwargs)
