"""AttentionPool and the MMPretrain AttentionPoolingHead: every input size and batch, per-sample independence, the
pooled value against a plain re-statement of the attention, errors."""
import math

import pytest
import torch

from mmssm.models import AttentionPool
from mmssm.registry import MODELS


def reference_pool(pool, x):
    """Single-query, per-sample, per-head softmax attention written out with explicit loops."""
    tokens = x.flatten(2).transpose(1, 2) if x.dim() == 4 else x
    outputs = []
    for sample in tokens:
        keys_values = pool.kv(pool.norm(sample))
        keys, values = keys_values[:, :pool.embed_dims], keys_values[:, pool.embed_dims:]
        queries = pool.q(pool.query)
        heads = []
        for h in range(pool.num_heads):
            part = slice(h * pool.head_dims, (h + 1) * pool.head_dims)
            weights = torch.softmax(queries[:, part] @ keys[:, part].T / math.sqrt(pool.head_dims), dim=-1)
            heads.append(weights @ values[:, part])
        outputs.append(pool.proj(torch.cat(heads, dim=-1)).mean(0))
    return torch.stack(outputs)


@pytest.mark.parametrize('shape', [(1, 16, 1, 1), (3, 16, 7, 5), (2, 16, 14, 14), (4, 9, 16)])
@pytest.mark.parametrize('num_queries', [1, 3])
def test_any_size_and_batch_matches_the_written_out_attention(shape, num_queries):
    torch.manual_seed(0)
    pool = AttentionPool(16, num_heads=4, num_queries=num_queries).double()
    x = torch.randn(*shape, dtype=torch.float64)
    out = pool(x)
    assert out.shape == (shape[0], 16)
    torch.testing.assert_close(out, reference_pool(pool, x), rtol=1e-10, atol=1e-12)
    assert pool.__class__(16, num_heads=4, num_queries=num_queries, reduce='none')(x.float()).shape == \
        (shape[0], num_queries, 16)


def test_samples_are_pooled_independently_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    pool = AttentionPool(8, num_heads=2)
    x = torch.randn(3, 8, 5, 6)
    out = pool(x)
    torch.testing.assert_close(pool(x[1:2]), out[1:2])
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pool.parameters())


@pytest.mark.parametrize('kwargs, match', [
    (dict(embed_dims=0), 'embed_dims must be a positive int'),
    (dict(embed_dims=10, num_heads=4), 'num_heads must be a positive int dividing embed_dims=10'),
    (dict(embed_dims=8, num_queries=0), 'num_queries must be a positive int'),
    (dict(embed_dims=8, reduce='max'), "reduce must be 'mean' or 'none'"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionPool(**kwargs)


def test_bad_input_is_named():
    pool = AttentionPool(8)
    with pytest.raises(ValueError, match=r'expected a \(batch, 8, H, W\) map, got \(2, 3, 4, 4\)'):
        pool(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match='no tokens'):
        pool(torch.randn(2, 0, 8))


def test_head_in_an_mmpretrain_classifier_trains_at_odd_sizes():
    pytest.importorskip('mmpretrain')
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='mmpretrain.ImageClassifier',
        backbone=dict(type='mmssm.MambaVision', arch='test', out_type='featmap'),
        head=dict(type='mmssm.AttentionPoolingHead', num_classes=5, in_channels=64, num_heads=4, num_queries=2)))
    model.init_weights()
    for size in [(33, 47), (64, 64)]:
        inputs = torch.randn(3, 3, *size)
        samples = [DataSample().set_gt_label(i % 5) for i in range(3)]
        losses = model(inputs, samples, mode='loss')
        assert torch.isfinite(losses['loss'])
        losses['loss'].backward()
        scores = model(inputs, mode='tensor')
        assert scores.shape == (3, 5)
    head = model.head
    assert head.fc.weight.grad is not None and head.pool.query.grad is not None
    with pytest.raises(ValueError, match='num_classes must be a positive int'):
        MODELS.build(dict(type='mmssm.AttentionPoolingHead', num_classes=0, in_channels=8))


def test_mask_excludes_tokens():
    torch.manual_seed(0)
    pool = AttentionPool(8, num_heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, True, False], [True] * 5])
    out = pool(x, mask=mask)
    torch.testing.assert_close(out[0], pool(x[0:1, [0, 1, 3]])[0])
    torch.testing.assert_close(out[1], pool(x[1:2])[0])


@pytest.mark.parametrize('size', [(1, 1), (7, 5), (8, 8), (13, 6)])
def test_attention_pool_downsample_pools_each_neighbourhood(size):
    from mmssm.models import AttentionPoolDownsample
    torch.manual_seed(0)
    down = AttentionPoolDownsample(8, num_heads=2).double()
    x = torch.randn(2, 8, *size, dtype=torch.float64)
    out = down(x)
    conv_shape = torch.nn.functional.conv2d(x, x.new_zeros(16, 8, 3, 3), stride=2, padding=1).shape
    assert out.shape == conv_shape
    # output pixel (i, j) pools input rows 2i-1..2i+1 and columns 2j-1..2j+1 that exist
    height, width = size
    for i, j in [(0, 0), (out.shape[2] - 1, out.shape[3] - 1)]:
        rows = [r for r in range(2 * i - 1, 2 * i + 2) if 0 <= r < height]
        cols = [c for c in range(2 * j - 1, 2 * j + 2) if 0 <= c < width]
        tokens = x[:, :, rows][:, :, :, cols].flatten(2).transpose(1, 2)
        torch.testing.assert_close(out[:, :, i, j], down.proj(down.pool(tokens)))


def test_mambavision_with_attention_pool_downsampling_trains_at_odd_sizes():
    from mmssm.models import MambaVision
    torch.manual_seed(0)
    model = MambaVision('test', downsample='attention_pool', out_indices=(0, 1, 2, 3), out_norm='ln2d')
    reference = MambaVision('test', out_indices=(0, 1, 2, 3), out_norm='ln2d')
    x = torch.randn(2, 3, 70, 45)
    outs = model(x)
    assert [o.shape for o in outs] == [o.shape for o in reference(x)]
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert type(model.levels[0].downsample).__name__ == 'AttentionPoolDownsample'
    with pytest.raises(ValueError, match="downsample must be one of"):
        MambaVision('test', downsample='pool')
