"""PlainMamba: zig-zag orders, one layer against a float64 reference with explicit loops, sizes, options."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmssm.models.backbones.plain_mamba import PlainMamba, PlainMambaMixer, zigzag_orders
from mmssm.registry import MODELS


@pytest.mark.parametrize('rows,cols', [(1, 1), (1, 5), (4, 1), (3, 4), (4, 4), (5, 7), (6, 3)])
def test_zigzag_orders_are_continuous_permutations(rows, cols):
    orders, inverse, directions = zigzag_orders(rows, cols)
    moves = {1: (0, 1), 2: (0, -1), 3: (-1, 0), 4: (1, 0)}
    for k in range(4):
        assert sorted(orders[k].tolist()) == list(range(rows * cols))
        assert torch.equal(orders[k][inverse[k]], torch.arange(rows * cols))
        assert directions[k, 0] == 0
        for t in range(1, rows * cols):
            (r0, c0), (r1, c1) = divmod(orders[k, t - 1].item(), cols), divmod(orders[k, t].item(), cols)
            assert abs(r1 - r0) + abs(c1 - c0) == 1  # 4-neighbours
            assert moves[directions[k, t].item()] == (r1 - r0, c1 - c0)
    assert orders[0, 0] == 0 and orders[2, 0] == 0  # both snakes start top-left
    assert torch.equal(orders[1], orders[0].flip(0)) and torch.equal(orders[3], orders[2].flip(0))


def _reference_mixer(m, x, grid):
    """Float64 PlainMamba mixer: explicit loops over the four zig-zag scans and over time (official semantics:
    u read in scan order, delta/B/C in raster order, dt_proj bias added twice, direction token added to B)."""
    p = {k: v.double() for k, v in m.state_dict().items()}
    rows, cols = grid
    xz = x @ p['in_proj.weight'].T + p['in_proj.bias']
    xs, z = xz.chunk(2, dim=-1)
    batch, length, d_inner = xs.shape
    xs = F.conv2d(xs.transpose(1, 2).reshape(batch, d_inner, rows, cols), p['conv2d.weight'], p['conv2d.bias'],
                  padding=m.conv2d.padding, groups=d_inner)
    xs = F.silu(xs).flatten(2).transpose(1, 2)  # (batch, L, d_inner)
    dbl = xs @ p['x_proj.weight'].T
    dt, B, C = dbl.split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.softplus(dt @ p['dt_proj.weight'].T + 2 * p['dt_proj.bias'])
    A = -torch.exp(p['A_log'])
    y = torch.zeros_like(xs)
    # build the snake orders independently
    row = [r * cols + (c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]
    col = [(r if c % 2 == 0 else rows - 1 - r) * cols + c for c in range(cols) for r in range(rows)]
    move = {(0, 1): 1, (0, -1): 2, (-1, 0): 3, (1, 0): 4}
    for order in (row, row[::-1], col, col[::-1]):
        codes = [0] + [move[(order[t] // cols - order[t - 1] // cols, order[t] % cols - order[t - 1] % cols)]
                       for t in range(1, length)]
        for b in range(batch):
            h = torch.zeros(d_inner, m.d_state, dtype=torch.float64)
            for t in range(length):
                u = xs[b, order[t]]
                bt = B[b, t] + p['direction_Bs'][codes[t]]
                h = torch.exp(delta[b, t, :, None] * A) * h + delta[b, t, :, None] * bt[None] * u[:, None]
                y[b, order[t]] += h @ C[b, t] + p['D'] * u
    return (y * F.silu(z)) @ p['out_proj.weight'].T + p['out_proj.bias']


@pytest.mark.parametrize('grid', [(3, 4), (4, 3)])
def test_mixer_matches_float64_reference(grid):
    torch.manual_seed(0)
    m = PlainMambaMixer(8, d_state=3, conv_size=3, scan_backend='torch').double()
    with torch.no_grad():
        for param in m.parameters():
            param.add_(0.1 * torch.randn_like(param))
    x = torch.randn(2, grid[0] * grid[1], 8, dtype=torch.float64)
    out = m(x, grid)
    ref = _reference_mixer(m, x, grid)
    assert (out - ref).abs().max().item() < 1e-10


# published sizes (PlainMamba paper, Table 1): L1 7.3M, L2 25.7M, L3 50.5M
@pytest.mark.parametrize('arch,params_m', [('l1', 7.3), ('l2', 25.7), ('l3', 50.5)])
def test_param_counts_match_paper(arch, params_m):
    with torch.device('meta'):
        model = PlainMamba(arch)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert params_m <= count < params_m + 0.1, count


def test_dense_outputs_non_divisible_input_and_backward():
    model = MODELS.build(dict(type='mmssm.PlainMamba', arch='test', img_size=64, out_indices=(0, -1),
                              out_type='featmap', drop_path_rate=0.1))
    x = torch.randn(2, 3, 70, 90)
    outs = model(x)
    grid = (math.ceil(35 / 8), math.ceil(45 / 8))
    assert [tuple(o.shape) for o in outs] == [(2, 32, *grid)] * 2
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_avg_featmap_is_mean_of_featmap():
    torch.manual_seed(0)
    model = PlainMamba('test', out_type='featmap').eval()
    pooled = PlainMamba('test', out_type='avg_featmap').eval()
    pooled.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 48, 32)
    torch.testing.assert_close(pooled(x)[0], model(x)[0].mean(dim=(2, 3)))


def test_frozen_stages_norm_eval_and_layer_depth():
    model = PlainMamba('test', frozen_stages=1, norm_eval=True)
    model.train()
    assert not model.patch_embed.stem[0].weight.requires_grad and not model.pos_embed.requires_grad
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert all(p.requires_grad for p in model.layers[1].parameters())
    assert not model.patch_embed.stem[1].training and not model.layers[0].dw[1].training
    assert model.get_layer_depth('backbone.layers.1.mixer.D', 'backbone.') == (2, 4)
    assert model.get_layer_depth('backbone.pos_embed', 'backbone.') == (0, 4)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (3, 4)


@pytest.mark.parametrize('kwargs,message', [
    (dict(arch='l9'), "unknown arch 'l9'"),
    (dict(out_type='cls_token'), "out_type must be one of"),
    (dict(out_indices=(5, )), 'out_indices entries must be ints in'),
    (dict(frozen_stages=3), 'frozen_stages must be an int in'),
    (dict(discretization='euler'), "unknown discretization 'euler'"),
    (dict(patch_size=15), 'patch_size must be an even int'),
])
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PlainMamba(**{'arch': 'test', **kwargs})


def test_pretrained_none_trains_from_scratch():
    model = PlainMamba('test', init_cfg=dict(type='Pretrained', checkpoint=None))
    model.init_weights()
