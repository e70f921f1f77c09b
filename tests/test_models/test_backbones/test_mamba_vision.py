"""MambaVision: sizes against the paper, the official structure, float64 parity with an independent statement of
the official forward (mamba_vision_reference.py), dense outputs at any size, every discretization, options, errors."""
import copy
import math

import pytest
import torch
from mamba_vision_reference import official_forward, official_state_dict
from torch import nn

import mmssm.models.layers.mamba_vision_mixer as mixer_module
from mmssm.converters import convert_mambavision_checkpoint
from mmssm.models import MambaVision, MambaVisionMixer
from mmssm.models.backbones.mamba_vision import ConvBlock, HybridBlock, num_mamba_blocks
from mmssm.models.layers import LayerNorm2d, MultiheadSelfAttention
from mmssm.models.layers.window import window_merge, window_partition
from mmssm.ops.selective_scan import METHODS

# the paper's / README's parameter counts in millions, with a 1000-class head
PAPER_PARAMS = {'tiny': 31.8, 'tiny2': 35.1, 'small': 50.1, 'base': 97.7, 'large': 227.9, 'large2': 241.5,
                'large2-512': 241.5, 'large3-256': 739.6, 'large3-512': 739.6}
# the exact counts of the official models (NVlabs/MambaVision, counted on the meta device): the paper rounds T, B
# and L3 to the nearest 0.1M but cuts L (227.96M) and L2 (241.55M) down
OFFICIAL_PARAMS = {'tiny': 31794248, 'tiny2': 35104008, 'small': 50140584, 'base': 97685288, 'large': 227961048,
                   'large2': 241554824, 'large2-512': 241554824, 'large3-256': 739570472, 'large3-512': 739570472}
OFFICIAL_NAMES = {'mamba_vision_T': 'tiny', 'mamba_vision_T2': 'tiny2', 'mamba_vision_S': 'small',
                  'mamba_vision_B': 'base', 'mamba_vision_B_21k': 'base', 'mamba_vision_L': 'large',
                  'mamba_vision_L_21k': 'large', 'mamba_vision_L2': 'large2',
                  'mamba_vision_L2_512_21k': 'large2-512', 'mamba_vision_L3_256_21k': 'large3-256',
                  'mamba_vision_L3_512_21k': 'large3-512'}

# the 'test' arch, and a second small model with layer scales, another stem width and 4 input channels;
# each as the reference's official settings and as mmssm's arch
REFERENCE_CONFIGS = {
    'test': (dict(dim=8, in_dim=8, in_chans=3, depths=(1, 1, 3, 2), num_heads=(1, 1, 2, 4), window_size=(8, 8, 3, 2),
                  mlp_ratio=2, layer_scale=None, layer_scale_conv=None), 'test'),
    'layer_scale': (dict(dim=8, in_dim=6, in_chans=4, depths=(2, 1, 4, 3), num_heads=(1, 1, 4, 2),
                         window_size=(8, 8, 2, 3), mlp_ratio=3, layer_scale=0.5, layer_scale_conv=0.7),
                    dict(embed_dims=8, stem_channels=6, depths=(2, 1, 4, 3), num_heads=(1, 1, 4, 2),
                         window_size=(8, 8, 2, 3), mlp_ratio=3, layer_scale=0.5, layer_scale_conv=0.7)),
}


def relative_error(ref, out):
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.isfinite(out).all()
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def assert_close(name, ref, out, tol):
    error = relative_error(ref, out)
    assert error <= tol, f'{name}: relative error {error:.3g} > {tol:.1g}'


def grad_missing(model):
    return [name for name, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]


def stage_sizes(size):
    """The four stage maps' sizes of an input size: every stride-2 conv (two in the stem, then one per stage)
    gives ceil(s / 2)."""
    sizes, (h, w) = [], size
    for _ in range(2):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    for _ in range(4):
        sizes.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return sizes


def backbone_part(converted):
    return {k[len('backbone.'):]: v for k, v in converted.items() if k.startswith('backbone.')}


# ------------------------------------------------------------------------------------------------ sizes, structure
@pytest.mark.parametrize('arch', sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(arch):
    with torch.device('meta'):  # nothing allocated, even for the 740M models
        model = MambaVision(arch)
    head = model.num_features[3] * 1000 + 1000
    count = sum(p.numel() for p in model.parameters()) + head
    assert count == OFFICIAL_PARAMS[arch]
    assert abs(count / 1e6 - PAPER_PARAMS[arch]) < 0.1, count


@pytest.mark.parametrize('official, name', sorted(OFFICIAL_NAMES.items()))
def test_official_model_names_are_archs(official, name):
    assert MambaVision.arch_zoo[official.lower()] is MambaVision.arch_zoo[name]
    with torch.device('meta'):
        model = MambaVision(official)  # names are case-insensitive
    assert model.arch_settings['window_size'] == list(MambaVision.arch_zoo[name]['window_size'])


def test_window_sizes_and_layer_scale_per_arch():
    zoo = MambaVision.arch_zoo
    for name in ('tiny', 'tiny2', 'small', 'base', 'large', 'large2'):
        assert zoo[name]['window_size'] == (8, 8, 14, 7)
    assert zoo['large2-512']['window_size'] == zoo['large3-512']['window_size'] == (8, 8, 32, 16)
    assert zoo['large3-256']['window_size'] == (8, 8, 16, 8)
    for name in ('tiny', 'tiny2', 'small'):
        assert zoo[name]['layer_scale'] is None
    for name in ('base', 'large', 'large2', 'large2-512', 'large3-256', 'large3-512'):
        assert zoo[name]['layer_scale'] == 1e-5
    assert all(zoo[name]['layer_scale_conv'] is None for name in PAPER_PARAMS)


@pytest.mark.parametrize('depth, mamba', [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (7, 4), (8, 4), (10, 5), (11, 6),
                                          (12, 6), (20, 10)])
def test_split_rule(depth, mamba):
    # the official rule: attention from depth // 2 + 1 (odd depth) or depth // 2 (even depth)
    first_attention = depth // 2 + 1 if depth % 2 else depth // 2
    assert num_mamba_blocks(depth) == mamba == first_attention


def test_official_structure():
    with torch.device('meta'):
        tiny2 = MambaVision('tiny2')
        base = MambaVision('base')
    stem = tiny2.patch_embed.conv_down
    assert [stem[1].eps, stem[4].eps] == [1e-4, 1e-4] and stem[0].bias is None and stem[3].bias is None
    assert isinstance(stem[2], nn.ReLU) and (stem[0].out_channels, stem[3].out_channels) == (32, 80)
    conv_block = tiny2.levels[1].blocks[0]
    assert isinstance(conv_block, ConvBlock) and conv_block.act1.approximate == 'tanh'
    assert conv_block.norm1.eps == 1e-5 and conv_block.conv1.bias is not None and conv_block.gamma is None
    stage = tiny2.levels[2]
    kinds = [isinstance(b.mixer, MultiheadSelfAttention) for b in stage.blocks]
    assert kinds == [False] * 6 + [True] * 5  # depth 11: 6 Mamba blocks, 5 attention
    block = stage.blocks[0]
    assert isinstance(block, HybridBlock) and block.mlp.act.approximate == 'none' and block.norm1.eps == 1e-5
    assert block.gamma_1 is None
    mixer = block.mixer
    assert (mixer.d_state, mixer.d_conv, mixer.d_inner, mixer.dt_rank) == (8, 3, 320, 20)
    assert mixer.conv1d_x.bias is None and mixer.in_proj.bias is None and mixer.out_proj.bias is None
    assert tiny2.levels[2].blocks[-1].mixer.qkv.bias is not None
    assert [level.downsample is None for level in tiny2.levels] == [False, False, False, True]
    assert tiny2.levels[0].downsample.reduction[0].bias is None
    assert isinstance(tiny2.norm3, nn.BatchNorm2d) and tiny2.norm3.eps == 1e-5
    assert base.levels[3].blocks[0].gamma_1.shape == (1024,) and base.levels[0].blocks[0].gamma is None
    # drop path rises linearly over all blocks: 0 .. 0.3 for base
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0. for level in base.levels
             for b in level.blocks]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.3) and len(rates) == 21


def test_official_initialization():
    torch.manual_seed(0)
    model = MambaVision('test')
    mixer = model.levels[2].blocks[0].mixer
    assert torch.all(mixer.dt_proj.bias == 0)  # every Linear's bias is zeroed, dt_proj's included
    assert mixer.in_proj.weight.std().item() == pytest.approx(0.02, rel=0.3)
    torch.testing.assert_close(mixer.A_log[0].exp(), torch.arange(1., 9.))


# ------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize('config', sorted(REFERENCE_CONFIGS))
@pytest.mark.parametrize('size', [(65, 97), (40, 24)])
def test_float64_parity_with_the_official_forward(config, size):
    reference_cfg, arch = REFERENCE_CONFIGS[config]
    channels = reference_cfg['in_chans']
    x = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    official = official_state_dict(reference_cfg, 'cls')
    logits_ref, _, maps_ref = official_forward(official, reference_cfg, x)
    converted = convert_mambavision_checkpoint(official)
    model = MambaVision(arch, in_channels=channels).double().eval()
    model.load_state_dict(backbone_part(converted), strict=True)
    features = model(x)[0]
    assert features.dtype == torch.float64 and features.shape[-2:] == stage_sizes(size)[3]
    logits = features.mean(dim=(2, 3)) @ converted['head.fc.weight'].T + converted['head.fc.bias']
    assert_close('logits', logits_ref, logits, 1e-12)

    official = official_state_dict(reference_cfg, 'dense', seed=2)
    _, dense_ref, _ = official_forward(official, reference_cfg, x)
    dense = MambaVision(arch, in_channels=channels, out_indices=(0, 1, 2, 3), out_norm='ln2d').double().eval()
    dense.load_state_dict(convert_mambavision_checkpoint(official, backbone_only=True), strict=True)
    outs = dense(x)
    for i, (ref, out) in enumerate(zip(dense_ref, outs)):
        assert out.dtype == torch.float64 and out.shape[-2:] == stage_sizes(size)[i]
        assert_close(f'stage {i}', ref, out, 1e-12)


def test_no_float32_rounding_in_a_float64_run(monkeypatch):
    """Every tensor the scan gets is float64, and the float64 model matches the float64 reference to 1e-12 while
    the same model in float32 misses it by orders of magnitude: a float32 step anywhere would show."""
    reference_cfg, arch = REFERENCE_CONFIGS['test']
    official = official_state_dict(reference_cfg, 'cls')
    x = torch.randn(1, 3, 33, 47, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    _, _, maps_ref = official_forward(official, reference_cfg, x)
    model = MambaVision(arch).double().eval()
    model.load_state_dict(backbone_part(convert_mambavision_checkpoint(official)), strict=True)

    seen = []
    scan = mixer_module.selective_scan

    def recording_scan(*args, **kwargs):
        seen.extend(t.dtype for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor))
        return scan(*args, **kwargs)

    monkeypatch.setattr(mixer_module, 'selective_scan', recording_scan)
    model.norm3 = nn.Identity()  # compare the raw last stage map
    out64 = model(x)[0]
    assert len(seen) == 3 * 7 and set(seen) == {torch.float64}  # 3 Mamba blocks x (u, delta, A, B, C, D, bias)
    error64 = relative_error(maps_ref[3], out64)
    error32 = relative_error(maps_ref[3], model.float()(x.float())[0])
    assert error64 < 1e-12 and error32 > 1e-9, (error64, error32)


# ------------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize('size', [(65, 97), (32, 32), (7, 9), (1, 1)])
def test_dense_and_classification_shapes_at_any_size(size):
    torch.manual_seed(0)
    dense = MambaVision('test', out_indices=(0, 1, 2, 3), out_norm='ln2d').eval()
    outs = dense(torch.randn(2, 3, *size))
    assert [tuple(o.shape) for o in outs] == [(2, 8 * 2 ** i, *hw) for i, hw in enumerate(stage_sizes(size))]
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(isinstance(getattr(dense, f'norm{i}'), LayerNorm2d) for i in range(4))
    cls = MambaVision('test', out_type='avg_featmap').eval()
    (pooled,) = cls(torch.randn(2, 3, *size))
    assert pooled.shape == (2, 64)


def test_outputs_follow_out_indices_order_and_skip_unused_stages():
    torch.manual_seed(0)
    model = MambaVision('test', out_indices=(2, 0), out_norm='none').eval()
    outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [32, 8]
    last = MambaVision('test', out_indices=-1)
    assert last.out_indices == [3]


def test_padding_is_cropped_and_windows_are_independent():
    """A window sees only its own tokens: with window 3 at a 6x6 stage-2 map (no padding), changing the input
    under one window leaves the stage-2 output of other windows unchanged (before the downsampling mixes them)."""
    torch.manual_seed(0)
    model = MambaVision('test', out_indices=(2,), out_norm='none').eval()
    x = torch.randn(1, 3, 96, 96)  # stage 2 at 6x6: four 3x3 windows
    y = x.clone()
    y[:, :, 80:, 80:] += 1.0  # reaches only the bottom-right corner of the stage-2 map
    a, b = model(x)[0], model(y)[0]
    assert a.shape[-2:] == (6, 6)
    torch.testing.assert_close(a[..., :3, :3], b[..., :3, :3])
    assert not torch.allclose(a[..., 3:, 3:], b[..., 3:, 3:])


@pytest.mark.parametrize('size', [(70, 45), (64, 64)])  # padded windows; one window a map in the last stages
def test_channels_last_input_keeps_its_layout_and_computes_the_same(size):
    """Float64: a channels-last input and model give the NCHW run's dense maps and gradients; the stages' maps stay
    channels-last (cuDNN's layout on a GPU); the outputs are contiguous NCHW."""
    torch.manual_seed(0)
    model = MambaVision('test', out_indices=(0, 1, 2, 3), out_norm='ln2d').double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    outs = model(x)
    grads = torch.autograd.grad(sum(o.square().mean() for o in outs), list(model.parameters()))
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    layouts = []
    for level in model_cl.levels:
        level.register_forward_hook(lambda module, args, result: layouts.append(result[1].is_contiguous(
            memory_format=torch.channels_last)))
    outs_cl = model_cl(x.to(memory_format=torch.channels_last))
    grads_cl = torch.autograd.grad(sum(o.square().mean() for o in outs_cl), list(model_cl.parameters()))
    assert layouts == [True] * 4
    for a, b in zip(outs, outs_cl):
        assert b.is_contiguous()
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    for (name, _), a, b in zip(model.named_parameters(), grads, grads_cl):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=name)


def test_conv_bn_fold_for_inference():
    """mmcv.cnn.fuse_conv_bn (mmpretrain's --fuse-conv-bn, benchmarks/mambavision_gpu.py --fuse-conv-bn) folds
    every BatchNorm of the stem and the conv blocks into its convolution: the children's order is the data flow's.
    Only the classifier's final BatchNorm (after attention blocks, no convolution) stays."""
    fuse_conv_bn = pytest.importorskip('mmcv.cnn').fuse_conv_bn
    torch.manual_seed(0)
    model = MambaVision('test', out_indices=(0, 1, 2, 3), out_norm='bn').double().eval()
    for module in model.modules():  # non-trivial statistics, so that a wrong fold shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    x = torch.randn(2, 3, 45, 70, dtype=torch.float64)
    with torch.no_grad():
        reference = model(x)
        fused = fuse_conv_bn(copy.deepcopy(model))
        outs = fused(x)
    left = [name for name, module in fused.named_modules() if isinstance(module, nn.BatchNorm2d)]
    assert left == ['norm0', 'norm1', 'norm2', 'norm3']
    for a, b in zip(reference, outs):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_window_partition_is_contiguous_with_one_window():
    """One window a map: the permute would stay a strided view, and every block after it would copy or run
    strided (the blocks' LayerNorms and residual adds)."""
    x = torch.randn(2, 5, 7, 7)
    tokens = window_partition(x, 7)
    assert tokens.is_contiguous()
    torch.testing.assert_close(tokens, x.flatten(2).transpose(1, 2))
    torch.testing.assert_close(window_merge(tokens, 7, 7, 7), x)


@pytest.mark.parametrize('method', METHODS)
def test_every_discretization_trains(method):
    torch.manual_seed(0)
    model = MambaVision('test', out_indices=(0, 1, 2, 3), out_norm='ln2d', discretization=method,
                        drop_path_rate=0.1)
    assert {m.discretization for m in model.modules() if isinstance(m, MambaVisionMixer)} == {method}
    model.train()
    outs = model(torch.randn(2, 3, 37, 45))
    sum(o.pow(2).mean() for o in outs).backward()
    assert grad_missing(model) == []


def test_mixer_cfg_reaches_every_mixer():
    model = MambaVision('test', mixer_cfg=dict(scan_backend='cuda', d_state=4))
    mixers = [m for m in model.modules() if isinstance(m, MambaVisionMixer)]
    assert len(mixers) == 3 and all(m.scan_backend == 'cuda' and m.d_state == 4 for m in mixers)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend='cuda' is not available for tensors on cpu"):
            model(torch.randn(1, 3, 32, 32))


def test_discretization_changes_the_function():
    torch.manual_seed(0)
    zoh = MambaVision('test').eval()
    rk4 = MambaVision('test', discretization='rk4').eval()
    rk4.load_state_dict(zoh.state_dict())
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(zoh(x)[0], rk4(x)[0])


def test_layer_scale_variant_trains_with_checkpointing():
    torch.manual_seed(0)
    arch = REFERENCE_CONFIGS['layer_scale'][1]
    plain = MambaVision(arch, in_channels=4, out_indices=(1, 3))
    cp = MambaVision(arch, in_channels=4, out_indices=(1, 3), with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 40, 36)
    for model in (plain, cp):
        model.train()
        sum(o.sum() for o in model(x)).backward()
    assert grad_missing(plain) == []
    for (name, p), q in zip(plain.named_parameters(), cp.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_frozen_stages():
    model = MambaVision('test', out_indices=(0, 1, 2, 3), frozen_stages=2)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    prefixes = ('patch_embed.', 'levels.0.', 'levels.1.', 'norm0.', 'norm1.')
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(prefixes)}
    assert not model.levels[1].blocks[0].norm1.training and not model.norm1.training
    assert model.levels[2].training and model.norm2.training
    sum(o.sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert grad_missing(model) == []
    everything = MambaVision('test', frozen_stages=4)
    assert not any(p.requires_grad for p in everything.parameters())


def test_norm_eval_keeps_batch_norms_frozen():
    model = MambaVision('test', norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 2 + 4 + 1 and all(not bn.training for bn in bns)
    assert model.levels[2].blocks[0].training


def test_layer_depth():
    model = MambaVision('test')  # 7 blocks: ids 1..7, stem 0, rest 8
    assert model.get_layer_depth('backbone.patch_embed.conv_down.0.weight', 'backbone.') == (0, 9)
    assert model.get_layer_depth('backbone.levels.2.blocks.1.mixer.A_log', 'backbone.') == (4, 9)
    assert model.get_layer_depth('backbone.levels.1.downsample.reduction.0.weight', 'backbone.') == (2, 9)
    assert model.get_layer_depth('backbone.norm3.weight', 'backbone.') == (8, 9)
    assert model.get_layer_depth('head.fc.weight', 'backbone.') == (8, 9)


# ------------------------------------------------------------------------------------------------ loading
def test_pretrained_init_cfg_loads_converted_weights(tmp_path):
    reference_cfg, _ = REFERENCE_CONFIGS['test']
    official = official_state_dict(reference_cfg, 'cls')
    full = tmp_path / 'full.pth'
    torch.save(dict(state_dict=convert_mambavision_checkpoint(official)), full)
    bare = tmp_path / 'backbone.pth'
    torch.save(dict(state_dict=convert_mambavision_checkpoint(official, backbone_only=True)), bare)
    for path, prefix in ((full, dict(prefix='backbone.')), (bare, {})):
        model = MambaVision('test', init_cfg=dict(type='Pretrained', checkpoint=str(path), **prefix))
        model.init_weights()
        torch.testing.assert_close(model.levels[2].blocks[0].mixer.A_log, official['levels.2.blocks.0.mixer.A_log']
                                   .float())
        torch.testing.assert_close(model.norm3.running_var, official['norm.running_var'].float())


def test_pretrained_init_cfg_with_checkpoint_none_keeps_the_initialization_and_takes_a_path_later(tmp_path):
    """The task configs set init_cfg=dict(type='Pretrained', checkpoint=None): init_weights keeps the official
    initialization; the path merged in later (a child config, --cfg-options) loads the weights."""
    from mmengine.config import Config
    torch.manual_seed(0)
    plain = MambaVision('test')
    torch.manual_seed(0)
    scratch = MambaVision('test', init_cfg=dict(type='Pretrained', checkpoint=None))
    scratch.init_weights()
    for (name, value), expected in zip(scratch.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(value, expected), name
    assert scratch.init_cfg == dict(type='Pretrained', checkpoint=None)  # restored after init_weights

    reference_cfg, _ = REFERENCE_CONFIGS['test']
    official = official_state_dict(reference_cfg, 'cls')
    path = tmp_path / 'backbone.pth'
    torch.save(dict(state_dict=convert_mambavision_checkpoint(official, backbone_only=True)), path)
    cfg = Config(dict(backbone=dict(type='mmssm.MambaVision', arch='test',
                                    init_cfg=dict(type='Pretrained', checkpoint=None))))
    cfg.merge_from_dict({'backbone.init_cfg.checkpoint': str(path)})  # what --cfg-options does
    from mmssm.registry import MODELS
    model = MODELS.build(cfg.backbone)
    model.init_weights()
    torch.testing.assert_close(model.levels[2].blocks[0].mixer.A_log, official['levels.2.blocks.0.mixer.A_log'].float())


def test_classifier_norm_is_not_loaded_into_a_dense_norm():
    reference_cfg, _ = REFERENCE_CONFIGS['test']
    weights = convert_mambavision_checkpoint(official_state_dict(reference_cfg, 'cls'), backbone_only=True)
    dense = MambaVision('test', out_indices=(2, 3), out_norm='ln2d')
    result = dense.load_state_dict(weights, strict=False)
    assert set(result.missing_keys) == {'norm2.weight', 'norm2.bias', 'norm3.weight', 'norm3.bias'}
    assert torch.all(dense.norm3.weight == 1) and torch.all(dense.norm3.bias == 0)
    with pytest.raises(RuntimeError, match='norm3.weight'):
        MambaVision('test', out_indices=(3,), out_norm='ln2d').load_state_dict(weights, strict=True)


def test_mmpretrain_classifier_from_a_config_matches_the_reference():
    pytest.importorskip('mmpretrain')
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import mmssm.models  # noqa: F401  (what custom_imports does)
    init_default_scope('mmpretrain')
    reference_cfg, _ = REFERENCE_CONFIGS['test']
    official = official_state_dict(reference_cfg, 'cls', num_classes=5)
    classifier = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='mmssm.MambaVision', arch='test'),
        neck=dict(type='GlobalAveragePooling'), head=dict(type='LinearClsHead', num_classes=5, in_channels=64)))
    classifier.double().eval()  # before loading, so that the float64 weights are not rounded to float32
    classifier.load_state_dict(convert_mambavision_checkpoint(official), strict=True)
    x = torch.randn(2, 3, 50, 38, dtype=torch.float64)
    logits_ref = official_forward(official, reference_cfg, x)[0]
    assert_close('mmpretrain logits', logits_ref, classifier(x, mode='tensor'), 1e-12)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), r"unknown arch 'huge'; choose one of \[.*'large3-512'.*'tiny'"),
    (dict(arch=dict(embed_dims=8)), r"missing \['depths', 'num_heads', 'stem_channels', 'window_size'\]"),
    (dict(arch=dict(MambaVision.arch_zoo['test'], depth=3)), r"unknown \['depth'\]"),
    (dict(arch=dict(MambaVision.arch_zoo['test'], depths=(1, 1, 3))), 'arch depths must be 4 positive ints'),
    (dict(arch=dict(MambaVision.arch_zoo['test'], num_heads=(1, 1, 3, 4))), r'num_heads\[2\]=3 must divide'),
    (dict(window_size=(8, 8, 0, 7)), r'window_size must be 4 positive ints.*got \(8, 8, 0, 7\)'),
    (dict(window_size=(8, 8, -2, 7)), 'window_size must be 4 positive ints'),
    (dict(window_size=(14, 7)), r'window_size must be 4 positive ints.*got \(14, 7\)'),
    (dict(window_size=7), 'window_size must be 4 positive ints'),
    (dict(arch=dict(MambaVision.arch_zoo['test'], window_size=(8, 8, 3.5, 2))), 'window_size must be 4'),
    (dict(out_indices=4), r'out_indices entries must be stage numbers in \[-4, 3\], got 4'),
    (dict(out_indices=(0, 'last')), "got 'last'"),
    (dict(out_indices=()), 'out_indices must be an int or a non-empty sequence'),
    (dict(out_indices=(1, -3)), 'out_indices has stage 1 twice'),
    (dict(out_type='cls_token'), r"out_type must be one of \('featmap', 'avg_featmap'\), got 'cls_token'"),
    (dict(out_norm='layernorm'), r"out_norm must be one of \('bn', 'ln2d', 'none'\).*got 'layernorm'"),
    (dict(discretization='euler'), "unknown discretization 'euler'"),
    (dict(discretization='rk4', mixer_cfg=dict(discretization='foh')), 'discretization is set both'),
    (dict(frozen_stages=5), r'frozen_stages must be an int in \[-1, 4\], got 5'),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\), got 1.0'),
    (dict(in_channels=0), 'in_channels must be a positive int, got 0'),
])
def test_bad_arguments(kwargs, match):
    kwargs = {'arch': 'test', **kwargs}
    with pytest.raises(ValueError, match=match):
        MambaVision(**kwargs)


def test_bad_inputs():
    model = MambaVision('test')
    with pytest.raises(ValueError, match=r'the input has 4 channels but the model was built with in_channels=3 '
                                         r'\(input shape \(1, 4, 32, 32\)\)'):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r'expected a \(batch, channels, height, width\) image tensor, got shape '
                                         r'\(3, 32, 32\)'):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match='int\\(expand \\* embed_dims\\) = 3 must be an even number'):
        MambaVisionMixer(3)


@pytest.mark.slow  # importing mmseg: about 14 s
def test_mmseg_segmentor_with_the_dense_backbone_trains_at_an_odd_size():
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import mmssm.models  # noqa: F401  (what custom_imports does)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    segmentor = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='mmssm.MambaVision', arch='test', out_indices=(0, 1, 2, 3), out_norm='ln2d',
                      window_size=(8, 8, 4, 2), discretization='bilinear'),
        decode_head=dict(type='UPerHead', in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], pool_scales=(1, 2),
                         channels=16, num_classes=3, norm_cfg=dict(type='BN'), align_corners=False,
                         loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))))
    segmentor.train()
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(65, 97), ori_shape=(65, 97), pad_shape=(65, 97)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 65, 97)))
        samples.append(sample)
    losses = segmentor(torch.randn(2, 3, 65, 97), samples, mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    assert grad_missing(segmentor.backbone) == []


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['cuda', 'triton'])
@pytest.mark.parametrize('method', ['zoh', 'bilinear', 'highorder'])
def test_gpu_backends_match_the_cpu_model(backend, method):
    """The same weights on CPU (torch scan) and on CUDA with each compiled backend: dense maps and every gradient."""
    if backend == 'cuda':
        from mmssm.ops.selective_scan import available_backends
        if 'cuda' not in available_backends('cuda'):
            pytest.skip('the CUDA extension is not built (python -m mmssm.ops.selective_scan.cuda_scan --build)')
    torch.manual_seed(0)
    cpu = MambaVision('test', discretization=method, out_indices=(0, 1, 2, 3), out_norm='ln2d')
    gpu = MambaVision('test', discretization=method, out_indices=(0, 1, 2, 3), out_norm='ln2d',
                      mixer_cfg=dict(scan_backend=backend)).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 3, 70, 45)
    out_cpu, out_gpu = cpu(x), gpu(x.cuda())
    for a, b in zip(out_cpu, out_gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-4)
    sum(o.square().mean() for o in out_cpu).backward()
    sum(o.square().mean() for o in out_gpu).backward()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-5, msg=name)
