"""MambaVision's attention variants, register tokens and ConvNeXt conv stages (the layers' own math is checked
against per-token references in test_window_attention_variants.py)."""
import pytest
import torch

from mmssm.models.backbones.mamba_vision import ConvBlock, ConvNeXtBlock, MambaVision
from mmssm.models.layers import ConvRelPosAttention, NeighbourhoodAttention, ShiftedWindowAttention
from mmssm.registry import MODELS

ATTENTIONS = ['window', 'shifted_window', 'sliding_window', 'conv_relative']
# 'test' with two attention blocks in stage 2, so that a shifted-window stage has a shifted block
DEEPER = dict(MambaVision.arch_zoo['test'], depths=(1, 1, 4, 2))
SIZE = (70, 90)  # neither the stem's strides nor the windows divide it
SHAPES = [(8, 18, 23), (16, 9, 12), (32, 5, 6), (64, 3, 3)]


def build(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('arch', 'test')
    return MODELS.build(dict(type='mmssm.MambaVision', out_indices=(0, 1, 2, 3), **kwargs))


def forward_backward(model, batch=2):
    outs = model(torch.randn(batch, 3, *SIZE))
    assert [tuple(o.shape[1:]) for o in outs] == SHAPES
    assert all(o.shape[0] == batch and torch.isfinite(o).all() for o in outs)
    sum(o.square().mean() for o in outs).backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    return outs


@pytest.mark.parametrize('attention', ATTENTIONS)
@pytest.mark.parametrize('arch', ['test', 'test-convnext'])
def test_every_variant_runs_dense_at_an_odd_size(attention, arch):
    forward_backward(build(arch=arch, attention=attention, num_registers=2))


@pytest.mark.parametrize('attention, cls', [('shifted_window', ShiftedWindowAttention),
                                            ('sliding_window', NeighbourhoodAttention),
                                            ('conv_relative', ConvRelPosAttention)])
def test_attention_blocks_use_the_variant_and_shifted_windows_alternate(attention, cls):
    model = build(arch=DEEPER, attention=attention)
    for stage in model.levels[2:]:
        mixers = [block.mixer for block in stage.blocks if block.use_attention]
        assert mixers and all(type(m) is cls for m in mixers)
        if attention == 'shifted_window':
            assert [m.shift for m in mixers] == [i % 2 == 1 for i in range(len(mixers))]
        if attention == 'sliding_window':
            assert all(m.kernel_size == stage.window_size for m in mixers)
    forward_backward(model)


@pytest.mark.parametrize('attention', ATTENTIONS)
def test_batch_elements_are_independent(attention):
    model = build(arch=DEEPER, attention=attention, num_registers=1).eval()
    images = torch.randn(3, 3, *SIZE)
    with torch.no_grad():
        together = model(images)
        alone = [model(images[i:i + 1]) for i in range(3)]
    for stage, out in enumerate(together):
        torch.testing.assert_close(out, torch.cat([a[stage] for a in alone]), rtol=1e-4, atol=1e-5)


def test_defaults_are_the_official_model():
    official = build()
    explicit = build(attention='window', num_registers=0, conv_block='official')
    assert list(official.state_dict()) == list(explicit.state_dict())
    for a, b in zip(official.state_dict().values(), explicit.state_dict().values()):
        assert torch.equal(a, b)
    assert not any('registers' in name for name in official.state_dict())
    assert all(type(block) is ConvBlock for stage in official.levels[:2] for block in stage.blocks)
    images = torch.randn(1, 3, *SIZE)
    for a, b in zip(official(images), explicit(images)):
        assert torch.equal(a, b)


def test_window_like_variants_load_the_official_weights():
    official = build().state_dict()
    for attention in ('shifted_window', 'sliding_window'):
        build(attention=attention).load_state_dict(official)  # strict: same parameter names


def test_registers_shape_gradient_and_effect():
    model = build(arch=DEEPER, num_registers=3, with_cp=True)
    for i, stage in enumerate(model.levels):
        assert hasattr(stage, 'registers') == (i >= 2)
    assert model.levels[2].registers.shape == (3, 32)
    assert model.levels[3].registers.shape == (3, 64)
    outs = forward_backward(model)
    for stage in model.levels[2:]:
        assert stage.registers.grad is not None and stage.registers.grad.abs().sum() > 0
    # the registers reach the real tokens (through the Mamba and the attention blocks)
    images = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        before = model(images)[2]
        # random, not a constant: a constant shift of a token is removed by the blocks' LayerNorms
        model.levels[2].registers.add_(torch.randn_like(model.levels[2].registers))
        assert not torch.allclose(model(images)[2], before)
    assert len(outs) == 4


def test_layer_depth_of_registers_and_convnext_blocks():
    model = build(arch='test-convnext', num_registers=2)
    assert model.get_layer_depth('levels.2.registers') == model.get_layer_depth('levels.2.blocks.0.norm1.weight')
    assert model.get_layer_depth('levels.0.blocks.0.dwconv.weight') == (1, sum(model.depths) + 2)


def test_frozen_stages_freeze_registers():
    model = build(num_registers=2, frozen_stages=3)
    model.train()
    assert not model.levels[2].registers.requires_grad
    assert model.levels[3].registers.requires_grad


def conv_block_params(dims, convnext, layer_scale):
    """Hand count of one conv-stage block (conv weights and biases, norms)."""
    if convnext:  # depthwise 7x7 + bias, LayerNorm, C -> 4C, 4C -> C
        count = dims * 49 + dims + 2 * dims + (dims * 4 * dims + 4 * dims) + (4 * dims * dims + dims)
    else:  # two 3x3 convolutions with bias, two BatchNorms
        count = 2 * (dims * dims * 9 + dims) + 2 * 2 * dims
    return count + (dims if layer_scale else 0)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base', 'test'])
def test_convnext_arch_parameter_count_against_a_hand_count(arch):
    with torch.device('meta'):
        official = MambaVision(arch)
        convnext = MambaVision(f'{arch}-convnext')
        by_kwarg = MambaVision(arch, conv_block='convnext')
        back = MambaVision(f'{arch}-convnext', conv_block='official')
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    settings = MambaVision.arch_zoo[arch]
    layer_scale = settings['layer_scale_conv'] is not None
    change = sum(settings['depths'][i] * (conv_block_params(settings['embed_dims'] * 2 ** i, True, layer_scale)
                                          - conv_block_params(settings['embed_dims'] * 2 ** i, False, layer_scale))
                 for i in range(2))
    assert count(convnext) - count(official) == change
    assert count(by_kwarg) == count(convnext) and count(back) == count(official)
    assert all(type(block) is ConvNeXtBlock for stage in convnext.levels[:2] for block in stage.blocks)
    assert convnext.arch_settings['conv_block'] == 'convnext'
    if arch == 'tiny':
        assert change == -803_440  # the figure in the docstring


def test_convnext_block_math():
    block = ConvNeXtBlock(4).double()
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    y = torch.nn.functional.conv2d(x, block.dwconv.weight, block.dwconv.bias, padding=3, groups=4)
    y = torch.nn.functional.layer_norm(y.permute(0, 2, 3, 1), (4,), block.norm.weight, block.norm.bias, 1e-6)
    y = torch.nn.functional.gelu(y @ block.pwconv1.weight.T + block.pwconv1.bias)
    y = (y @ block.pwconv2.weight.T + block.pwconv2.bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(block(x), x + y)


@pytest.mark.parametrize('kwargs', [
    dict(attention='conv_relative', num_registers=1, downsample='attention_pool', mixer='s4d'),
    dict(attention='sliding_window', num_registers=2, mixer='s5', arch='test-convnext', with_cp=True),
    dict(attention='shifted_window', discretization='foh', arch=DEEPER, conv_block='convnext', frozen_stages=1),
])
def test_options_combine(kwargs):
    forward_backward(build(**kwargs))


@pytest.mark.parametrize('kwargs, match', [
    (dict(attention='swin'), r"unknown attention 'swin'; choose one of \('window', 'shifted_window', "
                             r"'sliding_window', 'conv_relative'\)"),
    (dict(num_registers=-1), 'num_registers must be an int >= 0'),
    (dict(num_registers=1.5), 'num_registers must be an int >= 0'),
    (dict(num_registers=True), 'num_registers must be an int >= 0'),
    (dict(conv_block='resnet'), r"unknown conv_block 'resnet'; choose one of \('official', 'convnext'\)"),
    (dict(arch=dict(MambaVision.arch_zoo['test'], conv_block='x')), "unknown conv_block 'x'"),
    (dict(arch='test-convnxt'), r"unknown arch 'test-convnxt'; choose one of \[.*'test-convnext'"),
])
def test_bad_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MambaVision(**{'arch': 'test', **kwargs})
