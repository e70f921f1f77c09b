import pytest
import torch

from mmssm.models.necks import PlainPyramidNeck


def test_single_map_becomes_strides_4_8_16_32():
    neck = PlainPyramidNeck(in_channels=16)
    x = torch.randn(2, 16, 8, 12)  # stride 16 of a 128 x 192 image
    outs = neck((x,))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 32, 48), (2, 16, 16, 24), (2, 16, 8, 12), (2, 16, 4, 6)]
    # scale 1 is the identity and scale 0.5 a max-pool: checkable exactly.
    torch.testing.assert_close(outs[2], x)
    torch.testing.assert_close(outs[3], torch.nn.functional.max_pool2d(x, 2))


def test_one_map_per_scale_and_projection():
    neck = PlainPyramidNeck(in_channels=[8, 8, 8], scales=(2, 1, 0.25), out_channels=12)
    neck.init_weights()
    inputs = tuple(torch.randn(1, 8, 8, 8) + i for i in range(3))
    outs = neck(inputs)
    assert [tuple(o.shape) for o in outs] == [(1, 12, 16, 16), (1, 12, 8, 8), (1, 12, 2, 2)]
    assert neck.out_channels == [12, 12, 12]


def test_every_parameter_gets_a_gradient():
    neck = PlainPyramidNeck(in_channels=8)
    outs = neck(torch.randn(2, 8, 4, 4, requires_grad=True))
    sum(o.sum() for o in outs).backward()
    for name, param in neck.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize('kwargs, message', [
    (dict(in_channels=8, scales=(3, 1)), r'power of two such as 0.5, 1, 2 or 4, got 3'),
    (dict(in_channels=8, scales=()), 'scales must be a non-empty sequence'),
    (dict(in_channels=[8, 8], scales=(4, 2, 1)), r'one positive int per scale \(3 scales\), got \[8, 8\]'),
    (dict(in_channels=8, out_channels=0), 'out_channels must be a positive int or None, got 0'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PlainPyramidNeck(**kwargs)


def test_bad_inputs_are_named():
    neck = PlainPyramidNeck(in_channels=8)
    with pytest.raises(ValueError, match='got 2 feature maps for 4 scales'):
        neck((torch.randn(1, 8, 4, 4),) * 2)
    with pytest.raises(ValueError, match=r'8 channels, got shape \(1, 9, 4, 4\)'):
        neck((torch.randn(1, 9, 4, 4),))
