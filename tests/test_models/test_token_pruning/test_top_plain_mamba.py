"""ToP-ViM token pruning on PlainMamba: the pruned layers against a float64 full-length oracle, the model against the
dense PlainMamba, restoration of dense outputs and the FLOP count."""
import pytest
import torch
import torch.nn.functional as F

from mmssm.models.backbones.plain_mamba import PlainMambaMixer
from mmssm.models.token_pruning import select_tokens, token_importance
from mmssm.models.token_pruning.top_plain_mamba import ToPPlainMamba, pruned_mixer, scan_plan
from mmssm.registry import MODELS

# a 4 x 5 grid at 64 x 80; layer 2 (after the pruning) has the dw conv-BN-GELU on the stream
ARCH = dict(embed_dims=16, depth=3, num_convs_patch_embed=0, layers_with_dwconv=(0, 2), d_state=4, conv_size=3)
GRID = (4, 5)


def build(token_pruning=None, **kwargs):
    torch.manual_seed(0)
    cfg = dict(arch=ARCH, img_size=(64, 80), drop_path_rate=0.0, **kwargs)
    if token_pruning is None:
        cfg['type'] = 'mmssm.PlainMamba'
    else:
        cfg.update(type='mmssm.ToPPlainMamba', token_pruning=token_pruning)
    model = MODELS.build(cfg)
    with torch.no_grad():  # non-trivial BN statistics and direction tokens
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2), module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def images(batch=2, seed=0):
    return torch.randn(batch, 3, 64, 80, generator=torch.Generator().manual_seed(seed))


def top(layers=(0,), keep_ratio=0.5, mode='finetune'):
    return dict(type='mmssm.ToP', layers=layers, keep_ratio=keep_ratio, mode=mode)


def _snakes(rows, cols):
    row = [r * cols + (c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]
    col = [(r if c % 2 == 0 else rows - 1 - r) * cols + c for c in range(cols) for r in range(rows)]
    return row, row[::-1], col, col[::-1]


def _reference_pruned_mixer(m, x, grid, positions):
    """Float64 with explicit loops. Kept tokens x (batch, K, C) at raster ``positions``: conv on a grid that is zero
    at the pruned positions; each zig-zag scan walks the whole grid, a pruned token only decays the state with the
    delta of the next kept token of that scan; the j-th kept step of every scan reads the j-th kept (raster-order)
    token's delta, B and C (PlainMamba's raster rule on the kept sequence), B plus the direction token of the move
    that reached the token in the full grid."""
    p = {k: v.double() for k, v in m.state_dict().items()}
    rows, cols = grid
    length, (batch, kept, _) = rows * cols, x.shape
    xs, z = (x @ p['in_proj.weight'].T + p['in_proj.bias']).chunk(2, dim=-1)
    d_inner = xs.shape[-1]
    full = torch.zeros(batch, length, d_inner, dtype=torch.float64)
    for b in range(batch):
        full[b, positions[b]] = xs[b]
    full = F.conv2d(full.transpose(1, 2).reshape(batch, d_inner, rows, cols), p['conv2d.weight'],
                    p['conv2d.bias'], padding=m.conv2d.padding, groups=d_inner)
    full = F.silu(full).flatten(2).transpose(1, 2)
    xs = torch.stack([full[b, positions[b]] for b in range(batch)])  # (batch, K, d_inner)
    dt, B, C = (xs @ p['x_proj.weight'].T).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.softplus(dt @ p['dt_proj.weight'].T + 2 * p['dt_proj.bias'])
    A = -torch.exp(p['A_log'])
    move = {(0, 1): 1, (0, -1): 2, (-1, 0): 3, (1, 0): 4}
    y = torch.zeros_like(xs)
    for order in _snakes(rows, cols):
        codes = [0] + [move[(order[t] // cols - order[t - 1] // cols, order[t] % cols - order[t - 1] % cols)]
                       for t in range(1, length)]
        for b in range(batch):
            compact = {pos: i for i, pos in enumerate(positions[b].tolist())}
            h, step = torch.zeros(d_inner, m.d_state, dtype=torch.float64), 0
            for t in range(length):
                if order[t] not in compact:  # pruned: decay only, with the next kept step's delta
                    if step < kept:
                        h = torch.exp(delta[b, step, :, None] * A) * h
                    continue
                i, dl = compact[order[t]], delta[b, step, :, None]
                bt = B[b, step] + p['direction_Bs'][codes[t]]
                h = torch.exp(dl * A) * h + dl * bt[None] * xs[b, i, :, None]
                y[b, i] += h @ C[b, step] + p['D'] * xs[b, i]
                step += 1
    return (y * F.silu(z)) @ p['out_proj.weight'].T + p['out_proj.bias']


def test_pruned_mixer_matches_float64_full_length_oracle():
    torch.manual_seed(0)
    grid = (3, 5)
    m = PlainMambaMixer(8, d_state=3, conv_size=3, scan_backend='torch').double()
    with torch.no_grad():
        for param in m.parameters():
            param.add_(0.1 * torch.randn_like(param))
    positions = torch.stack([torch.randperm(15)[:7].sort().values for _ in range(3)])
    positions[0] = torch.tensor([0, 1, 2, 3, 4, 5, 14])  # a long tail of pruned tokens in the row snake
    x = torch.randn(3, 7, 8, dtype=torch.float64)
    out = pruned_mixer(m, x, grid, positions, scan_plan(positions, grid))
    ref = _reference_pruned_mixer(m, x, grid, positions)
    assert (out - ref).abs().max().item() < 1e-10
    every = torch.arange(15).expand(2, -1)  # nothing pruned: the dense mixer
    x = torch.randn(2, 15, 8, dtype=torch.float64)
    torch.testing.assert_close(pruned_mixer(m, x, grid, every, scan_plan(every, grid)), m(x, grid), rtol=1e-12,
                               atol=1e-12)


def test_scan_plan_orders_gaps_and_direction_codes():
    positions = torch.tensor([[0, 2, 7, 11]])  # 3 x 4 grid; row snake 0 1 2 3 7 6 5 4 8 9 10 11
    plan = scan_plan(positions, (3, 4))
    assert plan['order'][0, 0].tolist() == [0, 1, 2, 3]
    assert plan['gaps'][0, 0].tolist() == [0.0, 1.0, 1.0, 6.0]
    assert plan['directions'][0, 0].tolist() == [0, 1, 4, 1]  # start, right, down (3 -> 7), right (10 -> 11)
    # its reverse visits 11 first and 0 last; column snake 0 4 8 9 5 1 2 6 10 11 7 3: 0, 2, 11, 7
    assert plan['order'][1, 0].tolist() == [3, 2, 1, 0] and plan['gaps'][1, 0].tolist() == [0.0, 6.0, 1.0, 1.0]
    assert plan['order'][2, 0].tolist() == [0, 1, 3, 2] and plan['gaps'][2, 0].tolist() == [0.0, 5.0, 2.0, 0.0]
    assert torch.equal(plan['order'].gather(-1, plan['inverse']), torch.arange(4).expand(4, 1, -1))


@pytest.mark.parametrize('out_type', ['featmap', 'avg_featmap'])
def test_nothing_pruned_equals_plain_mamba_exactly(out_type):
    dense = build(out_type=out_type, out_indices=(0, 1, 2))
    pruned = build(top((0, 1), keep_ratio=1.0), out_type=out_type, out_indices=(0, 1, 2))
    pruned.load_state_dict(dense.state_dict())  # strict: the same parameter names
    free = build(top((0, 1), keep_ratio=0.5, mode='training_free'), out_type=out_type, out_indices=(0, 1, 2))
    free.load_state_dict(dense.state_dict())
    x = images()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(dense(x), pruned(x)))
        dense.train(), free.train()  # training_free trains dense
        assert all(torch.equal(a, b) for a, b in zip(dense(x), free(x)))


def test_model_equals_float64_reference_and_restores_pruned_stream():
    """Pruning after layer 0: layers 1 and 2 against the oracle mixer and a zero-grid dw conv, the featmaps with
    each pruned position holding its layer-0 stream."""
    model = build(top((0,), keep_ratio=0.5), out_type='featmap', out_indices=(1, 2)).double()
    x = images().double()
    with torch.no_grad():
        outs = model(x)
        tokens, grid = model.embed(x)
        stream, mixed = ToPPlainMamba._layer(model.layers[0], tokens, grid, None, None)
        keep = select_tokens(token_importance(mixed), 0.5)
        kept = torch.stack([stream[b, keep[b]] for b in range(2)])
        for index, out in zip((1, 2), outs):
            layer = model.layers[index]
            kept = kept + _reference_pruned_mixer(layer.mixer, layer.norm(kept), grid, keep)
            if layer.dw is not None:
                full = torch.zeros_like(stream)
                for b in range(2):
                    full[b, keep[b]] = kept[b]
                full = layer.dw(full.transpose(1, 2).reshape(2, -1, *grid)).flatten(2).transpose(1, 2)
                kept = torch.stack([full[b, keep[b]] for b in range(2)])
            restored = stream.clone()
            for b in range(2):
                restored[b, keep[b]] = kept[b]
            norm = model.norm_f if index == 2 else model.out_norms['1']
            expected = norm(restored).transpose(1, 2).reshape(2, 16, *grid)
            torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-10)
    assert keep.shape == (2, 10) and not torch.equal(keep[0], keep[1])  # per-sample selections


def test_batch_equals_one_at_a_time():
    model = build(top((0, 1), keep_ratio=0.6))
    x = images(3)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], torch.cat([model(x[i:i + 1])[0] for i in range(3)]), rtol=1e-5,
                                   atol=1e-6)


def test_finetune_gradients_flow_and_training_free_prunes_at_inference():
    model = build(top((0,), keep_ratio=0.5), out_type='featmap').train()
    model(images())[0].square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    dense, free = build(), build(top((0,), keep_ratio=0.5, mode='training_free'))
    free.load_state_dict(dense.state_dict())
    with torch.no_grad():
        assert not torch.allclose(dense(images())[0], free(images())[0])


def test_flops_drop_with_pruned_layers_at_kept_length():
    from mmssm.analysis.flops import analyze_flops, count_scan_flops
    dense, pruned = build(), build(top((0,), keep_ratio=0.5))
    x = images(1)
    dense_count, pruned_count = analyze_flops(dense, (x,)), analyze_flops(pruned, (x,))
    length, kept, d_inner = 20, 10, 32
    # four scans per layer (batch 4); the gap form is a plain scan (D inside) at the kept length
    assert dense_count.by_operator()['selective_scan'] == 3 * count_scan_flops(4, d_inner, length, 4, with_z=False)
    assert pruned_count.by_operator()['selective_scan'] == count_scan_flops(4, d_inner, length, 4, with_z=False) \
        + 2 * count_scan_flops(4, d_inner, kept, 4, with_z=False)
    dense_ops, pruned_ops = dense_count.by_module_and_operator(), pruned_count.by_module_and_operator()
    for name in ('layers.1', 'layers.2'):  # token-wise ops at the kept length; the convs run on the full grid
        assert pruned_ops[name]['linear'] * length == dense_ops[name]['linear'] * kept
        assert pruned_ops[name]['conv'] == dense_ops[name]['conv']
    pruned_layers = sum(dense_count.by_module()[f'layers.{i}'] for i in (1, 2))
    cut = 1 - pruned_count.total() / dense_count.total()
    # the kept half of the linear layers, scan and norms of layers 1 and 2, less their full-grid convs
    assert 0.25 * pruned_layers / dense_count.total() < cut < 0.5 * pruned_layers / dense_count.total()


def test_errors():
    with pytest.raises(ValueError, match="ToPPlainMamba: the hidden-state alignment needs discretization='zoh'"):
        build(top(), discretization='foh')
    with pytest.raises(ValueError, match=r'ToPPlainMamba: pruning layers \(3,\) must be < depth 3'):
        build(top((3,)))
    with pytest.raises(ValueError, match='ToPPlainMamba: token_pruning is required'):
        MODELS.build(dict(type='mmssm.ToPPlainMamba', arch='test'))
    assert isinstance(build(top()), ToPPlainMamba)
