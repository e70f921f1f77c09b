import io
import math

import pytest
import torch
from torch import nn

from mmssm.models import MambaMixer, Vim
from mmssm.ops.selective_scan import METHODS

SMALL = dict(img_size=32, patch_size=8)


def grad_missing(model):
    return [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not
                                                                                   torch.isfinite(p.grad).all())]


@pytest.fixture(scope='module')
def arch_models():
    torch.manual_seed(0)
    return {arch: Vim(arch, **SMALL) for arch in ('tiny', 'small', 'base', 'test')}


# Every arch with zoh and the test arch with every method run in `make test`; Vim-T with the other methods (their
# torch.compile'd CPU kernels at full width, about a minute each on 2 cores) in `make test-slow`. Vim-S/B with those
# methods run the same kernels at other widths, so they are left out.
ARCH_METHOD_CASES = ([(arch, 'zoh') for arch in ('tiny', 'small', 'base')] + [('test', m) for m in METHODS] +
                     [pytest.param('tiny', m, marks=pytest.mark.slow) for m in METHODS if m != 'zoh'])


@pytest.mark.parametrize('arch, method', ARCH_METHOD_CASES)
def test_every_arch_and_method_trains(arch_models, arch, method):
    """Full-depth models, on a 32x32 image (16 patches + the class token), each discretization."""
    model = arch_models[arch]
    for module in model.modules():
        if isinstance(module, MambaMixer):
            module.discretization = method
    model.zero_grad(set_to_none=True)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert len(out) == 1 and out[0].shape == (2, model.embed_dims)
    assert torch.isfinite(out[0]).all()
    out[0].pow(2).mean().backward()
    assert grad_missing(model) == []


@pytest.mark.parametrize('arch, params', [('tiny', 7e6), ('small', 26e6), ('base', 98e6)])
def test_arch_zoo_sizes_match_the_paper(arch_models, arch, params):
    # the Vim paper counts the 1000-class head too
    model = arch_models[arch]
    count = sum(p.numel() for p in model.parameters()) + model.embed_dims * 1001
    assert abs(count - params) / params < 0.03, count
    assert model.depth == 24 and model.layers[0].mixer.d_state == 16
    assert model.layers[0].mixer.d_inner == 2 * model.embed_dims


VARIANTS = {
    'default': {},
    'head_token_ln': dict(cls_token='head', norm_cfg=dict(type='LN', eps=1e-5)),
    'no_token_mean': dict(cls_token='none', out_type='mean'),
    'max_pool': dict(out_type='max'),
    'rope': dict(rope=True, rope_residual=True),
    'no_pos_embed_unidirectional': dict(pos_embed=False, bidirectional=False),
    'se': dict(se_ratio=4),
    'mobilenetv2': dict(conv_type='inverted_residual'),
    'se_mobilenetv2_checkpointed': dict(se_ratio=2, conv_type='inverted_residual', with_cp=True),
    'drop_path_fp16_residual': dict(drop_path_rate=0.2, drop_rate=0.1, residual_in_fp32=False),
    'stride_smaller_than_patch': dict(patch_size=8, stride=4),
    'sum_directions': dict(divide_out=False),
}


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_options(variant, method):
    torch.manual_seed(0)
    kwargs = {**SMALL, **VARIANTS[variant]}
    model = Vim('test', discretization=method, **kwargs)
    model.init_weights()
    model.train()
    out = model(torch.randn(2, 3, 32, 32))[0]
    assert out.shape == (2, 32) and torch.isfinite(out).all()
    out.sum().backward()
    assert grad_missing(model) == []


def test_variants_have_their_parts():
    se = Vim('test', se_ratio=4, **SMALL)
    assert se.layers[0].mixer.se.fc1.out_features == 64 // 4
    mb = Vim('test', conv_type='inverted_residual', mixer_cfg=dict(inverted_residual_cfg=dict(expand_ratio=3)),
             **SMALL)
    assert mb.layers[0].mixer.conv1d.expand.out_channels == 64 * 3
    uni = Vim('test', bidirectional=False, **SMALL)
    assert not hasattr(uni.layers[0].mixer, 'A_b_log')


def test_discretization_reaches_every_block():
    model = Vim('test', discretization='bilinear', **SMALL)
    assert {m.discretization for m in model.modules() if isinstance(m, MambaMixer)} == {'bilinear'}
    torch.manual_seed(0)
    zoh = Vim('test', **SMALL)
    zoh.init_weights()
    rk4 = Vim('test', discretization='rk4', **SMALL)
    rk4.load_state_dict(zoh.state_dict())
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(zoh(x)[0], rk4(x)[0])  # the method changes the function


@pytest.mark.parametrize('size', [(32, 32), (37, 45), (64, 24), (8, 8), (5, 70)])
def test_dense_outputs_any_size(size):
    model = Vim('test', out_type='featmap', out_indices=(0, -1), **SMALL)
    model.init_weights()
    outs = model(torch.randn(2, 3, *size))
    grid = tuple(math.ceil(s / 8) for s in size)
    assert [o.shape for o in outs] == [(2, 32, *grid)] * 2
    assert all(torch.isfinite(o).all() for o in outs)


def test_padding_adds_patches_only_where_needed():
    model = Vim('test', out_type='featmap', **SMALL).eval()
    x = torch.randn(1, 3, 33, 32)
    assert model.patch_embed.grid((32, 32)) == (4, 4)
    assert model.patch_embed.grid((33, 32)) == (5, 4)
    tokens_33, grid = model.patch_embed(x)
    tokens_32, _ = model.patch_embed(x[:, :, :32])
    assert grid == (5, 4)
    torch.testing.assert_close(tokens_33[:, :16], tokens_32)  # the first 4 patch rows see no padding
    stride8 = Vim('test', img_size=224, patch_size=16, stride=8)
    assert stride8.train_grid == (27, 27)  # as the original Vim's stride-8 models


@pytest.mark.parametrize('size', [(64, 64), (50, 70)])
def test_patch_embed_matmul_equals_the_conv(size):
    """Non-overlapping patches run as one matmul into the token layout: the conv's tokens and gradients in float64
    (a padded size too); with a hook on the projection (FLOP counters, pruning) the conv module runs instead."""
    from mmssm.models.backbones.vim import PatchEmbed
    torch.manual_seed(0)
    embed = PatchEmbed(3, 8, (16, 16), (16, 16)).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    assert embed._patchify()
    tokens, grid = embed(x)
    calls = []
    embed.projection.register_forward_hook(lambda *args: calls.append(1))
    assert not embed._patchify()
    reference, ref_grid = embed(x)
    assert calls and grid == ref_grid and tokens.shape == (2, grid[0] * grid[1], 8)
    torch.testing.assert_close(tokens, reference, rtol=0, atol=1e-13)
    weight = torch.randn_like(tokens)
    grads = torch.autograd.grad((tokens * weight).sum(), [x, embed.projection.weight, embed.projection.bias])
    ref_grads = torch.autograd.grad((reference * weight).sum(), [x, embed.projection.weight, embed.projection.bias])
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=0, atol=1e-12)
    assert not PatchEmbed(3, 8, (16, 16), (8, 8))._patchify()  # overlapping patches: the conv


def test_middle_class_token_and_pos_embed_layout():
    model = Vim('test', **SMALL)
    assert model.pos_embed.shape == (1, 17, 32)
    assert model._pos_cls_index(16) == 8
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    raw = Vim('test', out_type='raw', **SMALL)
    raw.load_state_dict(model.state_dict())
    raw.eval()
    tokens = raw(x)[0]
    torch.testing.assert_close(model(x)[0], tokens[:, 8])


def test_pos_embed_resized_when_loading_another_resolution():
    torch.manual_seed(0)
    small = Vim('test', img_size=32, patch_size=8)
    small.init_weights()
    big = Vim('test', img_size=64, patch_size=8)
    big.load_state_dict(small.state_dict())
    assert big.pos_embed.shape == (1, 65, 32)
    torch.testing.assert_close(big.pos_embed[:, 32], small.pos_embed[:, 8])  # the class token's slot moves along
    # the model at 64 px with resized weights computes the same as the 32 px model resizing on the fly
    small.eval(), big.eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(big(x)[0], small(x)[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='cannot load pos_embed'):
        Vim('test', img_size=32, patch_size=8).load_state_dict({**small.state_dict(),
                                                                  'pos_embed': torch.zeros(1, 20, 32)})


def test_frozen_stages():
    model = Vim('test', frozen_stages=1, **SMALL)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert 'pos_embed' in frozen and 'cls_token' in frozen and 'patch_embed.projection.weight' in frozen
    assert any(n.startswith('layers.0.') for n in frozen)
    assert not any(n.startswith('layers.1.') for n in frozen)
    out = model(torch.randn(1, 3, 32, 32))[0]
    out.sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert model.layers[1].mixer.in_proj.weight.grad is not None
    everything = Vim('test', frozen_stages=2, **SMALL)
    assert not any(p.requires_grad for p in everything.parameters())


def test_norm_eval_keeps_batch_norms_frozen():
    model = Vim('test', conv_type='inverted_residual', norm_eval=True, **SMALL)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(not bn.training for bn in bns)


def test_layer_depth():
    model = Vim('test', **SMALL)
    assert model.get_layer_depth('backbone.pos_embed', 'backbone.') == (0, 4)
    assert model.get_layer_depth('backbone.layers.1.mixer.A_log', 'backbone.') == (2, 4)
    assert model.get_layer_depth('backbone.norm_f.weight', 'backbone.') == (3, 4)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (3, 4)


def test_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = Vim('test', **SMALL)
    cp = Vim('test', with_cp=True, **SMALL)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, cp):
        model(x)[0].sum().backward()
    for (name, p), q in zip(plain.named_parameters(), cp.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), "unknown arch 'huge'"),
    (dict(arch=dict(embed_dims=32)), 'missing'),
    (dict(discretization='euler'), "unknown discretization 'euler'"),
    (dict(cls_token='tail'), "cls_token must be one of"),
    (dict(out_type='avg'), 'out_type must be one of'),
    (dict(cls_token='none', out_type='cls_token'), 'needs a class token'),
    (dict(rope_residual=True), 'rope_residual=True needs rope=True'),
    (dict(out_indices=(5,)), 'out_indices entries'),
    (dict(frozen_stages=3), 'frozen_stages'),
    (dict(patch_size=8, stride=16), 'would skip pixels'),
    (dict(conv_type='dwconv'), "unknown conv_type 'dwconv'"),
    (dict(mixer_cfg=dict(discretization='foh')), 'set it once'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
    (dict(arch=dict(embed_dims=32, depth=2, expand=0)), r'arch expand must be a positive number .* got 0\.'),
    (dict(arch=dict(embed_dims=32, depth=2, expand='2')), "got '2'"),
    (dict(feature_source='residual'), r"feature_source must be one of \('stream', 'mixer'\), got 'residual'"),
])
def test_bad_options_are_named(kwargs, match):
    args = {'arch': 'test', **SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        Vim(**args)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='batch, channels, height, width'):
        Vim('test', **SMALL)(torch.randn(3, 32, 32))


def relative_error(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.mark.parametrize('method', ['zoh', 'bilinear'])
def test_bf16_autocast_forward_is_close_to_float32(method):
    """Under bf16 autocast the matmuls round to bf16 (relative error about 3e-3 here) while the scan keeps
    float32; the output must stay near the float32 model's, not merely finite."""
    torch.manual_seed(0)
    model = Vim('test', out_type='featmap', discretization=method, **SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)[0]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(x)[0]
    assert torch.isfinite(out.float()).all()
    assert relative_error(out, ref) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize('method', ['zoh', 'bilinear', 'highorder'])
def test_cuda_matches_cpu(method):
    torch.manual_seed(0)
    cpu = Vim('test', discretization=method, out_type='featmap', **SMALL)
    cpu.init_weights()
    gpu = Vim('test', discretization=method, out_type='featmap', **SMALL).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 3, 40, 32)
    out_cpu, out_gpu = cpu(x)[0], gpu(x.cuda())[0]
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-4, atol=1e-4)
    out_cpu.square().mean().backward()
    out_gpu.square().mean().backward()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-5, msg=name)
    with torch.no_grad():
        ref = gpu(x.cuda())[0]
        with torch.autocast('cuda', dtype=torch.bfloat16):
            out = gpu(x.cuda())[0]
    assert torch.isfinite(out.float()).all() and relative_error(out, ref) < 3e-2


def test_patch_embed_init_is_lecun_normal_truncated_at_2_std():
    """As Vim's patch embedding (timm's lecun_normal_): std sqrt(1 / fan_in), cut at 2 of the untruncated std."""
    torch.manual_seed(0)
    model = Vim(dict(embed_dims=256, depth=1), img_size=16, patch_size=16)  # 196608 weights, fan_in 768
    model.init_weights()
    weight = model.patch_embed.projection.weight.detach().double()
    target = math.sqrt(1 / 768)
    assert abs(weight.std().item() / target - 1) < 0.01, weight.std().item() / target
    bound = 2 * target / 0.87962566103423978  # 2 std of the normal before truncation
    assert weight.abs().max().item() <= bound * (1 + 1e-6)
    assert weight.abs().max().item() > 0.99 * bound  # truncated there, not far inside
    assert abs(weight.mean().item()) < 0.01 * target
    assert torch.count_nonzero(model.patch_embed.projection.bias) == 0


def test_pretrained_without_checkpoint_trains_from_scratch(monkeypatch):
    import mmssm.models.backbones.vim as vim_module
    messages = []
    monkeypatch.setattr(vim_module, 'print_log', lambda message, **kwargs: messages.append(message))
    torch.manual_seed(0)
    scratch = Vim('test', **SMALL, init_cfg=dict(type='Pretrained', checkpoint=None))
    scratch.init_weights()
    torch.manual_seed(0)
    reference = Vim('test', **SMALL)
    reference.init_weights()
    for key, value in reference.state_dict().items():
        assert torch.equal(scratch.state_dict()[key], value), key
    assert any('checkpoint=None: training the backbone from scratch' in m for m in messages)
    assert scratch.init_cfg == dict(type='Pretrained', checkpoint=None)  # the config is left as given


@pytest.mark.parametrize('layout, fix', [
    ('classifier', r"it is a whole-model checkpoint: add prefix='backbone\.'"),
    ('original', r'it looks like an original hustvl/Vim checkpoint: convert it with .*vim2mmssm\.py'),
])
def test_pretrained_checkpoint_that_fits_nothing_is_an_error(tmp_path, layout, fix):
    state_dict = Vim('test', **SMALL).state_dict()
    if layout == 'classifier':
        state_dict = {'backbone.' + key: value for key, value in state_dict.items()}
    else:
        state_dict = {key.replace('patch_embed.projection', 'patch_embed.proj'): value
                      for key, value in state_dict.items() if not key.startswith('layers.')}
        state_dict = {'patch_embed.proj.weight': state_dict.pop('patch_embed.proj.weight'), **state_dict}
        state_dict.pop('pos_embed')
        state_dict.pop('cls_token')
        state_dict.pop('norm_f.weight')
    torch.save({'state_dict': state_dict}, tmp_path / 'ckpt.pth')
    model = Vim('test', **SMALL, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ckpt.pth')))
    with pytest.raises(ValueError, match=f"has none of this backbone's weights.*Fix: {fix}"):
        model.init_weights()


def _randomized(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    return model


def _without_slot(pos_embed, index):
    return torch.cat([pos_embed[:, :index], pos_embed[:, index + 1:]], dim=1)


def test_pos_embed_into_a_model_without_class_token():
    source = _randomized(Vim('test', **SMALL))  # middle class token: slot 8 of 17
    target = Vim('test', cls_token='none', out_type='featmap', **SMALL)
    state_dict = source.state_dict()  # records the grid and the class token's slot in its metadata
    result = target.load_state_dict(state_dict, strict=False)
    assert result.unexpected_keys == ['cls_token'] and not result.missing_keys
    assert torch.equal(target.pos_embed, _without_slot(source.pos_embed, 8))
    # the same through a file (torch.save keeps the metadata; weights_only=True reads it)
    head = _randomized(Vim('test', cls_token='head', **SMALL))
    buffer = io.BytesIO()
    torch.save({'state_dict': head.state_dict()}, buffer)
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer, weights_only=True)['state_dict'], strict=False)
    assert torch.equal(target.pos_embed, _without_slot(head.pos_embed, 0))
    middle = Vim('test', **SMALL)  # a head token's slot moves to the middle
    middle.load_state_dict(head.state_dict())
    assert torch.equal(middle.pos_embed[:, 8], head.pos_embed[:, 0])
    assert torch.equal(_without_slot(middle.pos_embed, 8), _without_slot(head.pos_embed, 0))
    # without the metadata the slot cannot be told from the patches: a clear error, not a shape error
    plain = dict(source.state_dict())
    with pytest.raises(ValueError, match=r"checkpoint has a class token \(cls_token\) but this Vim has "
                                         r"cls_token='none'.*does not record where"):
        target.load_state_dict(plain, strict=False)
    no_token = _randomized(Vim('test', cls_token='none', out_type='mean', **SMALL))
    with pytest.raises(ValueError, match=r"checkpoint has no class token .* but this Vim has cls_token='middle'"):
        Vim('test', **SMALL).load_state_dict(dict(no_token.state_dict()), strict=False)


def test_pos_embed_of_a_non_square_grid():
    from mmssm.models.layers import resize_pos_embed
    wide = _randomized(Vim('test', img_size=(32, 64), patch_size=8))  # 4x8 grid, class token at 16
    expected = {grid: resize_pos_embed(wide.pos_embed.detach(), (4, 8), grid, 16) for grid in [(4, 4), (8, 4)]}
    square = Vim('test', img_size=32, patch_size=8)
    square.load_state_dict(wide.state_dict())
    assert torch.equal(square.pos_embed, expected[(4, 4)])
    assert wide.state_dict()._metadata['']['pos_embed_grid'] == [4, 8]
    tall = Vim('test', img_size=(64, 32), patch_size=8)  # same number of slots: only the metadata tells
    tall.load_state_dict(wide.state_dict())
    assert torch.equal(tall.pos_embed, expected[(8, 4)])
    # without metadata: the grid of this model's aspect, if exactly one fits; else an error that says so
    wider = Vim('test', img_size=(64, 128), patch_size=8)
    wider.load_state_dict(dict(wide.state_dict()))
    assert torch.equal(wider.pos_embed, resize_pos_embed(wide.pos_embed.detach(), (4, 8), (8, 16), 16))
    with pytest.raises(ValueError, match=r'cannot tell its patch grid \(32 patch slots\): it is neither square nor '
                                         r"of this model's aspect 4:4.*resize_pos_embed"):
        square.load_state_dict(dict(wide.state_dict()))
    ambiguous = _randomized(Vim('test', img_size=(64, 256), patch_size=8))  # 8x32 = 256 = 16x16 slots
    with pytest.raises(ValueError, match=r'both \[\(8, 32\), \(16, 16\)\] fit'):
        Vim('test', img_size=(32, 128), patch_size=8).load_state_dict(dict(ambiguous.state_dict()))


@pytest.mark.parametrize('out_type', ['raw', 'featmap'])
def test_mixer_feature_source_returns_the_mixer_outputs(out_type):
    """feature_source='mixer': each block's mixer output itself, as hustvl/Vim's VisionMambaSeg."""
    torch.manual_seed(0)
    model = Vim('test', out_type=out_type, out_indices=(0, 1), feature_source='mixer', **SMALL).eval()
    stream = Vim('test', out_type='raw', out_indices=(0, 1), **SMALL).eval()
    stream.load_state_dict(model.state_dict())
    captured = []
    for layer in model.layers:
        layer.mixer.register_forward_hook(lambda module, args, output: captured.append(output))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs, stream_outs = model(x), stream(x)
    for out, mixer_out in zip(outs, captured):
        if out_type == 'featmap':  # the 16 patch tokens around the middle class token, as a 4x4 map
            mixer_out = torch.cat([mixer_out[:, :8], mixer_out[:, 9:]], dim=1).transpose(1, 2).reshape(2, 32, 4, 4)
        assert torch.equal(out, mixer_out)
    # the default returns the residual stream (and the final norm of the last block): something else
    assert not torch.allclose(stream_outs[0], captured[0]) and not torch.allclose(stream_outs[1], captured[1])
