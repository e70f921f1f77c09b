"""ToP-ViM token pruning on Vim: importance, selection, alignment and the model against the dense Vim."""
import math

import pytest
import torch

from mmssm.models.token_pruning import ToPVim, gap_counts, select_tokens, token_importance
from mmssm.ops.selective_scan import selective_scan_naive
from mmssm.registry import MODELS

ARCH = dict(embed_dims=32, depth=4, d_state=4, expand=2)


def build(token_pruning=None, **kwargs):
    torch.manual_seed(0)
    cfg = dict(arch=ARCH, img_size=32, patch_size=8, drop_path_rate=0.0, **kwargs)
    if token_pruning is None:
        cfg['type'] = 'mmssm.Vim'
    else:
        cfg.update(type='mmssm.ToPVim', token_pruning=token_pruning)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


def images(batch=3, seed=0):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def top(layers=(1,), keep_ratio=0.5, mode='finetune'):
    return dict(type='mmssm.ToP', layers=layers, keep_ratio=keep_ratio, mode=mode)


@pytest.mark.parametrize('out_type', ['cls_token', 'featmap'])
def test_keep_ratio_one_equals_dense_exactly(out_type):
    dense = build(out_type=out_type)
    pruned = build(top((1, 2), keep_ratio=1.0), out_type=out_type)
    pruned.load_state_dict(dense.state_dict())
    x = images()
    with torch.no_grad():
        assert torch.equal(dense(x)[0], pruned(x)[0])


def test_importance_matches_hand_computation():
    y = torch.tensor([[[1.0, -2.0, 3.0], [-1.0, -1.0, 0.5]]])
    expected = torch.tensor([[1.0 + 3.0, 0.5]])
    torch.testing.assert_close(token_importance(y), expected)


def test_selection_keeps_class_token_in_original_order_per_sample():
    importance = torch.tensor([[5.0, 0.0, 4.0, 1.0, 3.0], [0.0, 9.0, -1.0, 8.0, 7.0]])
    cls = torch.tensor([1, 2])
    keep = select_tokens(importance, 0.5, cls)  # ceil(0.5 * 4) = 2 of the 4 prunable, plus the class token
    assert keep.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert (keep.diff(dim=1) > 0).all()


def test_gap_counts():
    forward, backward = gap_counts(torch.tensor([[1, 2, 5]]), 8)
    assert forward.tolist() == [[1.0, 0.0, 2.0]] and backward.tolist() == [[0.0, 2.0, 2.0]]


def test_per_sample_independence_and_batch_equals_one_at_a_time():
    model = build(top((0, 2), keep_ratio=0.6))
    x = images(3)
    with torch.no_grad():
        batched = model(x)[0]
        single = torch.cat([model(x[i:i + 1])[0] for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    # the samples really pruned different tokens
    kept = []
    hook = model.layers[0].mixer.register_forward_hook(
        lambda module, args, output: kept.append(select_tokens(token_importance(output), 0.6,
                                                               torch.full((3,), 8))))
    with torch.no_grad():
        model(x)
    hook.remove()
    assert not all(torch.equal(kept[0][0], kept[0][i]) for i in (1, 2))


def test_pruned_forward_equals_masked_full_length_oracle():
    """One pruning step after block 0 of a one-direction Vim: block 1 on the kept tokens (gap form) gives the
    kept tokens' outputs of the full-length masked scan whose pruned positions carry the next kept delta."""
    model = build(top((0,), keep_ratio=0.5), bidirectional=False, out_type='raw', out_indices=1)
    model.layers[1].mixer.conv1d.weight.data.zero_()  # a conv over compacted tokens differs: isolate the scan
    model.layers[1].mixer.conv1d.weight.data[:, :, -1] = 1.0
    x = images(2)
    captured = {}
    mixer = model.layers[1].mixer
    hook = mixer.register_forward_hook(lambda m, args, out: captured.update(normed=args[0], out=out))
    with torch.no_grad():
        model(x)
        hook.remove()
        normed = captured['normed']
        xz = mixer.in_proj(normed).transpose(1, 2)
        u, z = xz.chunk(2, dim=1)
        args = mixer._direction(u, z, '', reverse=False)
        # full-length reconstruction: kept tokens at their original places, pruned positions u = anything
        length = 17
        kept = select_tokens(token_importance(model.layers[0].mixer(
            model.layers[0].norm(model.drop_after_pos(model_tokens(model, x))))), 0.5, torch.full((2,), 8))
        full = {}
        for name in ('u', 'delta', 'B', 'C'):
            value = args[name]
            out = value.new_zeros(value.shape[:-1] + (length,))
            out.scatter_(-1, kept.unsqueeze(1).expand(-1, value.shape[1], -1), value)
            full[name] = out
        # each pruned position takes the delta of the next kept token (forward scan)
        source = torch.zeros(2, length, dtype=torch.long)
        for b in range(2):
            next_kept = kept[b, -1].item()
            for t in range(length - 1, -1, -1):
                if t in kept[b].tolist():
                    next_kept = t
                source[b, t] = next_kept
        full['delta'] = args['delta'].new_zeros(args['delta'].shape[:-1] + (length,))
        for b in range(2):
            position = {t: i for i, t in enumerate(kept[b].tolist())}
            full['delta'][b] = args['delta'][b][:, [position[s] for s in source[b].tolist()]]
        z_full = u.new_zeros(u.shape[:-1] + (length,)).scatter(-1, kept.unsqueeze(1).expand(-1, u.shape[1], -1), z)
        mask = torch.zeros(2, length, dtype=torch.bool).scatter(1, kept, True)
        y_full = selective_scan_naive(**full, A=args['A'], D=args['D'], delta_bias=args['delta_bias'], z=z_full,
                                      keep_mask=mask)
        y_kept = y_full.gather(-1, kept.unsqueeze(1).expand(-1, y_full.shape[1], -1))
        expected = mixer.out_proj(y_kept.float().transpose(1, 2))
    torch.testing.assert_close(captured['out'], expected, rtol=1e-4, atol=1e-5)


def model_tokens(model, x):
    tokens, grid = model.patch_embed(x)
    cls = model.cls_token.expand(x.shape[0], -1, -1)
    tokens = torch.cat([tokens[:, :8], cls, tokens[:, 8:]], dim=1)
    return tokens + model.pos_embed


def test_finetune_gradients_flow_and_training_free_trains_dense():
    model = build(top((1,), keep_ratio=0.5)).train()
    out = model(images(2))[0]
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    dense = build()
    free = build(top((1,), keep_ratio=0.5, mode='training_free'))
    free.load_state_dict(dense.state_dict())
    dense.train(), free.train()
    x = images(2)
    assert torch.equal(dense(x)[0], free(x)[0])  # trains dense
    dense.eval(), free.eval()
    with torch.no_grad():
        assert not torch.allclose(dense(x)[0], free(x)[0])  # prunes at inference


def test_featmap_restores_full_grid():
    model = build(top((0,), keep_ratio=0.5), out_type='featmap', out_indices=(0, 3))
    with torch.no_grad():
        outs = model(images(2))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 4, 4)] * 2
    assert all(torch.isfinite(o).all() for o in outs)


def test_flops_drop_with_scan_at_pruned_length():
    from mmssm.analysis.flops import analyze_flops, count_scan_flops
    dense = build()
    pruned = build(top((0,), keep_ratio=0.5))
    x = images(1)
    dense_scan = analyze_flops(dense, (x,)).by_operator()['selective_scan']
    pruned_scan = analyze_flops(pruned, (x,)).by_operator()['selective_scan']
    kept = 1 + math.ceil(0.5 * 16)
    # the gap form is a plain scan (D and z inside) at the kept length
    per_layer = [count_scan_flops(1, 64, 17, 4), count_scan_flops(1, 64, kept, 4)]
    assert dense_scan == 2 * 4 * per_layer[0]
    assert pruned_scan == 2 * (per_layer[0] + 3 * per_layer[1])
    assert analyze_flops(pruned, (x,)).total() < analyze_flops(dense, (x,)).total()


def test_errors():
    with pytest.raises(ValueError, match='ToP: keep_ratio must be in'):
        build(top(keep_ratio=1.5))
    with pytest.raises(ValueError, match="ToPVim: the hidden-state alignment needs discretization='zoh'"):
        build(top(), discretization='foh')
    with pytest.raises(ValueError, match='ToPVim: pruning layers'):
        build(top((7,)))
    assert isinstance(build(top()), ToPVim)
