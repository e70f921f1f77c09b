"""An independent float64 statement of the official MambaVision forward, for parity tests.

Written from the paper and the facts of the official code (NVlabs/MambaVision), not from mmssm: plain functions
over a state dict with the official key names, its own naive sequential selective scan, its own window split,
GELU, LayerNorm and BatchNorm written out. Nothing here imports mmssm.

Facts restated (official ``mambavision/models/mamba_vision.py`` and the ``MM_mamba_vision`` dense backbone):

* stem ``patch_embed.conv_down``: conv3x3/2 (no bias) - BN(eps 1e-4) - ReLU - conv3x3/2 (no bias) - BN(eps 1e-4) - ReLU;
* stages 0-1 (``levels.{0,1}``): ConvBlocks x + [gamma *] BN(conv(GELU_tanh(BN(conv(x))))), BN eps 1e-5, convs
  with bias;
* stages 2-3: zero-pad bottom/right to whole windows, split into windows (tokens row by row), blocks
  x + [gamma_1 *] mixer(LN(x)), x + [gamma_2 *] mlp(LN(x)) with LN eps 1e-5, exact GELU in the MLP; the first
  ceil(depth / 2) blocks' mixer is MambaVisionMixer, the rest multi-head attention (qkv with bias, scale
  head_dim ** -0.5); merge the windows and crop;
* MambaVisionMixer (d_state 8, d_conv 3, expand 1): in_proj (no bias) -> x, z halves; each half depthwise conv1d
  (no bias, symmetric 'same' padding) + SiLU; x_proj(x) -> dt, B, C; dt = dt_proj(dt) *with* its bias, and the scan
  adds the bias again (delta_bias) before softplus; y = scan(x) + D x (no gate); out_proj(concat(y, z));
* a 3x3/2 conv (no bias) after stages 0-2 doubles the channels;
* classifier: BatchNorm2d (eps 1e-5) on the last map, average pool, linear head;
* dense backbone: each stage's map before its downsampling through ``outnorm{i}``, LayerNorm over channels (eps 1e-5).
"""
import math

import torch
import torch.nn.functional as F

DOUBLE = torch.float64


# ---------------------------------------------------------------------------------------------------- weights
def official_state_dict(cfg, kind='cls', num_classes=7, seed=0):
    """Random weights (float64) under the official key names, for ``kind`` 'cls' (MambaVision) or 'dense'
    (MM_mamba_vision with outnorm0..3). ``cfg``: dim, in_dim, in_chans, depths, num_heads, mlp_ratio, layer_scale,
    layer_scale_conv (None or a number)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=gen, dtype=DOUBLE)

    def fan_in(*shape):  # weight scaled by 1 / sqrt(fan in), so activations stay O(1)
        return randn(*shape, scale=1 / math.sqrt(math.prod(shape[1:])))

    sd = {}

    def batch_norm(prefix, c):
        sd[prefix + 'weight'] = 1 + randn(c, scale=0.2)
        sd[prefix + 'bias'] = randn(c, scale=0.2)
        sd[prefix + 'running_mean'] = randn(c, scale=0.2)
        sd[prefix + 'running_var'] = 0.5 + torch.rand(c, generator=gen, dtype=DOUBLE)
        sd[prefix + 'num_batches_tracked'] = torch.tensor(7)

    def layer_norm(prefix, c):
        sd[prefix + 'weight'] = 1 + randn(c, scale=0.2)
        sd[prefix + 'bias'] = randn(c, scale=0.2)

    def linear(prefix, out_features, in_features, bias=True):
        sd[prefix + 'weight'] = fan_in(out_features, in_features)
        if bias:
            sd[prefix + 'bias'] = randn(out_features, scale=0.1)

    dim, in_dim = cfg['dim'], cfg['in_dim']
    sd['patch_embed.conv_down.0.weight'] = fan_in(in_dim, cfg['in_chans'], 3, 3)
    batch_norm('patch_embed.conv_down.1.', in_dim)
    sd['patch_embed.conv_down.3.weight'] = fan_in(dim, in_dim, 3, 3)
    batch_norm('patch_embed.conv_down.4.', dim)
    for i, depth in enumerate(cfg['depths']):
        c = dim * 2 ** i
        for j in range(depth):
            p = f'levels.{i}.blocks.{j}.'
            if i < 2:
                sd[p + 'conv1.weight'] = fan_in(c, c, 3, 3)
                sd[p + 'conv1.bias'] = randn(c, scale=0.1)
                batch_norm(p + 'norm1.', c)
                sd[p + 'conv2.weight'] = fan_in(c, c, 3, 3)
                sd[p + 'conv2.bias'] = randn(c, scale=0.1)
                batch_norm(p + 'norm2.', c)
                if cfg['layer_scale_conv'] is not None:
                    sd[p + 'gamma'] = cfg['layer_scale_conv'] + randn(c, scale=0.1)
                continue
            layer_norm(p + 'norm1.', c)
            layer_norm(p + 'norm2.', c)
            if j >= (depth + 1) // 2:  # attention
                linear(p + 'mixer.qkv.', 3 * c, c)
                linear(p + 'mixer.proj.', c, c)
            else:
                half, n, rank = c // 2, 8, math.ceil(c / 16)
                linear(p + 'mixer.in_proj.', c, c, bias=False)
                linear(p + 'mixer.x_proj.', rank + 2 * n, half, bias=False)
                sd[p + 'mixer.dt_proj.weight'] = fan_in(half, rank)
                sd[p + 'mixer.dt_proj.bias'] = -1.5 + randn(half, scale=0.3)
                sd[p + 'mixer.A_log'] = torch.log(torch.arange(1, n + 1, dtype=DOUBLE)).repeat(half, 1) + \
                    randn(half, n, scale=0.1)
                sd[p + 'mixer.D'] = 1 + randn(half, scale=0.2)
                linear(p + 'mixer.out_proj.', c, c, bias=False)
                sd[p + 'mixer.conv1d_x.weight'] = fan_in(half, 1, 3)
                sd[p + 'mixer.conv1d_z.weight'] = fan_in(half, 1, 3)
            hidden = int(c * cfg['mlp_ratio'])
            linear(p + 'mlp.fc1.', hidden, c)
            linear(p + 'mlp.fc2.', c, hidden)
            if cfg['layer_scale'] is not None:
                sd[p + 'gamma_1'] = cfg['layer_scale'] + randn(c, scale=0.3)
                sd[p + 'gamma_2'] = cfg['layer_scale'] + randn(c, scale=0.3)
        if i < 3:
            sd[f'levels.{i}.downsample.reduction.0.weight'] = fan_in(2 * c, c, 3, 3)
    if kind == 'cls':
        batch_norm('norm.', dim * 8)
        linear('head.', num_classes, dim * 8)
    else:
        for i in range(4):
            layer_norm(f'outnorm{i}.', dim * 2 ** i)
    return sd


# ---------------------------------------------------------------------------------------------------- pieces
def batch_norm_eval(x, sd, p, eps):
    shape = (1, -1, 1, 1)
    return (x - sd[p + 'running_mean'].view(shape)) / torch.sqrt(sd[p + 'running_var'].view(shape) + eps) * \
        sd[p + 'weight'].view(shape) + sd[p + 'bias'].view(shape)


def layer_norm_last(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu_exact(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def silu(x):
    return x / (1 + torch.exp(-x))


def softplus(x):
    return torch.log1p(torch.exp(x))


def linear(x, sd, p, bias=True):
    y = x @ sd[p + 'weight'].T
    return y + sd[p + 'bias'] if bias and p + 'bias' in sd else y


def naive_scan(u, delta, A, B, C, D):
    """h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t h_t + D u_t, one step at a time.
    u, delta: (b, d, L); A: (d, n); B, C: (b, n, L)."""
    b, d, length = u.shape
    h = torch.zeros(b, d, A.shape[1], dtype=DOUBLE)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, dim=-1) + D[:, None] * u


def mamba_vision_mixer(x, sd, p):
    """x: (b, L, c)."""
    c = x.shape[-1]
    half, n, rank = c // 2, sd[p + 'A_log'].shape[1], sd[p + 'dt_proj.weight'].shape[1]
    xz = linear(x, sd, p + 'in_proj.', bias=False).transpose(1, 2)
    xs, z = xz[:, :half], xz[:, half:]
    k = sd[p + 'conv1d_x.weight'].shape[-1]
    pad = (k // 2, k // 2)  # 'same' for the odd kernel
    xs = silu(F.conv1d(F.pad(xs, pad), sd[p + 'conv1d_x.weight'], groups=half))
    z = silu(F.conv1d(F.pad(z, pad), sd[p + 'conv1d_z.weight'], groups=half))
    x_dbl = xs.transpose(1, 2) @ sd[p + 'x_proj.weight'].T
    dt, B, C = x_dbl[..., :rank], x_dbl[..., rank:rank + n], x_dbl[..., rank + n:]
    dt = dt @ sd[p + 'dt_proj.weight'].T + sd[p + 'dt_proj.bias']  # dt_proj with its bias ...
    delta = softplus(dt.transpose(1, 2) + sd[p + 'dt_proj.bias'][:, None])  # ... and the bias again (delta_bias)
    A = -torch.exp(sd[p + 'A_log'])
    y = naive_scan(xs, delta, A, B.transpose(1, 2), C.transpose(1, 2), sd[p + 'D'])
    y = torch.cat([y, z], dim=1).transpose(1, 2)
    return linear(y, sd, p + 'out_proj.', bias=False)


def attention(x, sd, p, heads):
    b, length, c = x.shape
    hd = c // heads
    qkv = linear(x, sd, p + 'qkv.').reshape(b, length, 3, heads, hd)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (b, heads, L, hd)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, length, c)
    return linear(out, sd, p + 'proj.')


def split_windows(x, ws):
    """(b, c, H, W) (multiples of ws) -> list of (L = ws*ws, c) token matrices, one per window, row by row."""
    b, c, height, width = x.shape
    windows = []
    for i in range(b):
        for r in range(height // ws):
            for s in range(width // ws):
                patch = x[i, :, r * ws:(r + 1) * ws, s * ws:(s + 1) * ws]
                windows.append(patch.reshape(c, ws * ws).T)
    return windows


def join_windows(windows, b, c, height, width, ws):
    x = torch.zeros(b, c, height, width, dtype=DOUBLE)
    index = 0
    for i in range(b):
        for r in range(height // ws):
            for s in range(width // ws):
                x[i, :, r * ws:(r + 1) * ws, s * ws:(s + 1) * ws] = windows[index].T.reshape(c, ws, ws)
                index += 1
    return x


def hybrid_stage(x, sd, i, cfg, window):
    b, c, height, width = x.shape
    pad_h, pad_w = (window - height % window) % window, (window - width % window) % window
    x = F.pad(x, (0, pad_w, 0, pad_h))
    tokens = torch.stack(split_windows(x, window))  # (windows, L, c)
    depth = cfg['depths'][i]
    for j in range(depth):
        p = f'levels.{i}.blocks.{j}.'
        normed = layer_norm_last(tokens, sd[p + 'norm1.weight'], sd[p + 'norm1.bias'])
        if j >= (depth + 1) // 2:
            out = attention(normed, sd, p + 'mixer.', cfg['num_heads'][i])
        else:
            out = mamba_vision_mixer(normed, sd, p + 'mixer.')
        tokens = tokens + (sd[p + 'gamma_1'] * out if p + 'gamma_1' in sd else out)
        normed = layer_norm_last(tokens, sd[p + 'norm2.weight'], sd[p + 'norm2.bias'])
        out = linear(gelu_exact(linear(normed, sd, p + 'mlp.fc1.')), sd, p + 'mlp.fc2.')
        tokens = tokens + (sd[p + 'gamma_2'] * out if p + 'gamma_2' in sd else out)
    x = join_windows(list(tokens), b, c, x.shape[2], x.shape[3], window)
    return x[:, :, :height, :width]


def conv_stage(x, sd, i, cfg):
    for j in range(cfg['depths'][i]):
        p = f'levels.{i}.blocks.{j}.'
        out = F.conv2d(x, sd[p + 'conv1.weight'], sd[p + 'conv1.bias'], padding=1)
        out = gelu_tanh(batch_norm_eval(out, sd, p + 'norm1.', 1e-5))
        out = F.conv2d(out, sd[p + 'conv2.weight'], sd[p + 'conv2.bias'], padding=1)
        out = batch_norm_eval(out, sd, p + 'norm2.', 1e-5)
        x = x + (sd[p + 'gamma'].view(1, -1, 1, 1) * out if p + 'gamma' in sd else out)
    return x


# ---------------------------------------------------------------------------------------------------- model
def official_forward(sd, cfg, x):
    """Eval-mode forward. Returns (logits or None, [stage maps through outnorm{i}] or None, [raw stage maps])."""
    x = x.to(DOUBLE)
    x = F.conv2d(x, sd['patch_embed.conv_down.0.weight'], stride=2, padding=1)
    x = torch.relu(batch_norm_eval(x, sd, 'patch_embed.conv_down.1.', 1e-4))
    x = F.conv2d(x, sd['patch_embed.conv_down.3.weight'], stride=2, padding=1)
    x = torch.relu(batch_norm_eval(x, sd, 'patch_embed.conv_down.4.', 1e-4))
    stage_maps = []
    for i in range(4):
        x = conv_stage(x, sd, i, cfg) if i < 2 else hybrid_stage(x, sd, i, cfg, cfg['window_size'][i])
        stage_maps.append(x)
        if i < 3:
            x = F.conv2d(x, sd[f'levels.{i}.downsample.reduction.0.weight'], stride=2, padding=1)
    logits = dense = None
    if 'norm.weight' in sd:
        pooled = batch_norm_eval(x, sd, 'norm.', 1e-5).mean(dim=(2, 3))
        logits = linear(pooled, sd, 'head.')
    if 'outnorm0.weight' in sd:
        dense = [layer_norm_last(m.permute(0, 2, 3, 1), sd[f'outnorm{i}.weight'], sd[f'outnorm{i}.bias'])
                 .permute(0, 3, 1, 2) for i, m in enumerate(stage_maps)]
    return logits, dense, stage_maps
