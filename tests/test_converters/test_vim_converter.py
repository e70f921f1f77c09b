"""The converter from original Vim (hustvl/Vim) checkpoints to mmssm's layout.

The "original" checkpoints are made here from mmssm's own Vim by renaming its keys back to the original layout
(written out in this file, independently of the converter), so a round trip must give the same model; and, so that
the layout is not only mmssm's idea of it, from the key names and shapes of the released Vim-T as hustvl/Vim's code
defines them (tests/data/vim_tiny_official_keys.json).
"""
import argparse
import datetime
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mmssm.models  # noqa: F401  (registers mmssm.Vim)
from mmssm.converters import (
    compare_rope_tables,
    convert_vim_checkpoint,
    infer_vim_arch,
    vim_config_snippet,
    vim_conversion,
)
from mmssm.models import Vim

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'model_converters' / 'vim2mmssm.py'
SMALL = dict(arch='test', img_size=32, patch_size=8)  # 4x4 patches + the class token
NUM_CLASSES = 10


def randomized(model, seed=0):
    """Give every parameter a distinct, non-default value, so a wrong mapping shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return model.eval()


def to_original_layout(mmssm_state_dict):
    """mmssm's Vim keys -> hustvl/Vim's VisionMamba keys (the inverse of the converter, written independently)."""
    original = {}
    for key, value in mmssm_state_dict.items():
        if key == 'patch_embed.projection.weight':
            key = 'patch_embed.proj.weight'
        elif key == 'patch_embed.projection.bias':
            key = 'patch_embed.proj.bias'
        else:
            assert key in ('cls_token', 'pos_embed') or key.startswith(('layers.', 'norm_f.')), key
        original[key] = value.clone()
    return original


def original_rope_tables(embed_dims, grid, pretrain_grid):
    """The buffers of the original VisionRotaryEmbeddingFast(dim=embed_dims // 2, pt_seq_len=pretrain_grid,
    ft_seq_len=grid): (grid * grid, embed_dims), rows in the first half of the channels, columns in the second."""
    dim = embed_dims // 2
    freqs = 1. / (10000 ** (torch.arange(0, dim, 2)[:dim // 2].float() / dim))
    positions = torch.arange(grid) / grid * pretrain_grid
    freqs = torch.einsum('i,f->if', positions, freqs).repeat_interleave(2, dim=-1)
    table = torch.cat([freqs[:, None].expand(grid, grid, dim), freqs[None].expand(grid, grid, dim)], dim=-1)
    table = table.reshape(grid * grid, embed_dims)
    return table.cos(), table.sin()


def original_checkpoint(model, head=True, rope=False, prefix='', wrap=True, rope_pretrain_grid=4):
    state_dict = to_original_layout(model.state_dict())
    if rope:
        cos, sin = original_rope_tables(model.embed_dims, 4, rope_pretrain_grid)
        state_dict['rope.freqs_cos'], state_dict['rope.freqs_sin'] = cos, sin
    if head:
        generator = torch.Generator().manual_seed(1)
        state_dict['head.weight'] = torch.randn(NUM_CLASSES, model.embed_dims, generator=generator)
        state_dict['head.bias'] = torch.randn(NUM_CLASSES, generator=generator)
    state_dict = {prefix + key: value for key, value in state_dict.items()}
    if wrap:
        return {'model': state_dict, 'optimizer': {'state': {}}, 'epoch': 299}
    return state_dict


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(0)
    return randomized(Vim(**SMALL))


@pytest.fixture(scope='module')
def image():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def assert_same_outputs(reference, model, image):
    with torch.no_grad():
        expected, got = reference(image), model(image)
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


@pytest.mark.parametrize('prefix, wrap', [('', True), ('module.', True), ('', False), ('module.', False)])
def test_backbone_round_trip(source, image, prefix, wrap):
    checkpoint = original_checkpoint(source, prefix=prefix, wrap=wrap)
    converted = convert_vim_checkpoint(checkpoint, backbone_only=True)
    model = Vim(**SMALL).eval()
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_same_outputs(source, model, image)


def test_full_form_keys(source):
    converted = convert_vim_checkpoint(original_checkpoint(source))
    backbone_keys = {'backbone.' + key for key in source.state_dict()}
    assert set(converted) == backbone_keys | {'head.fc.weight', 'head.fc.bias'}
    assert converted['backbone.patch_embed.projection.weight'] is not None


@pytest.mark.parametrize('variant', ['rope', 'ln_unidirectional'])
def test_variants_round_trip(image, variant):
    torch.manual_seed(3)
    kwargs = dict(rope=True) if variant == 'rope' else dict(norm_cfg=dict(type='LN', eps=1e-5), bidirectional=False)
    reference = randomized(Vim(**SMALL, **kwargs))
    checkpoint = original_checkpoint(reference, rope=variant == 'rope')
    result = vim_conversion(checkpoint, backbone_only=True)
    model = Vim(**SMALL, **kwargs).eval()
    model.load_state_dict(result.state_dict, strict=True)
    assert_same_outputs(reference, model, image)
    dropped = {key for key, _ in result.dropped}
    if variant == 'rope':
        assert dropped == {'rope.freqs_cos', 'rope.freqs_sin', 'head.weight', 'head.bias'}
        assert result.arch['rope'] and result.arch['norm'] == 'rms' and result.arch['bidirectional']
        assert result.arch['rope_grid'] == (4, 4)
        assert compare_rope_tables(checkpoint)[0] is True
        matches, message = compare_rope_tables(original_checkpoint(reference, rope=True, rope_pretrain_grid=14))
        assert not matches and 'differ' in message
    else:
        assert dropped == {'head.weight', 'head.bias'}
        assert not result.arch['rope'] and result.arch['norm'] == 'ln' and not result.arch['bidirectional']
        assert compare_rope_tables(checkpoint) is None
    assert len(result.mapped) == len(model.state_dict())


def test_infer_arch(source):
    arch = infer_vim_arch(original_checkpoint(source, prefix='module.'))
    assert {key: arch[key] for key in ('embed_dims', 'depth', 'd_state', 'expand', 'patch_size', 'in_channels')} \
        == dict(embed_dims=32, depth=2, d_state=4, expand=2, patch_size=8, in_channels=3)
    assert arch['bidirectional'] is True and arch['rope'] is False and arch['norm'] == 'rms'
    assert arch['cls_token'] == 'middle' and arch['pos_grid'] == (4, 4) and arch['num_classes'] == NUM_CLASSES
    assert arch['mixer_cfg'] == {}
    assert 'stride' not in arch and any('stride' in note for note in arch['notes'])
    assert any("class token's position cannot be told" in note for note in arch['notes'])
    snippet = vim_config_snippet(arch)
    assert "arch='test'" in snippet and 'img_size=32' in snippet and 'num_classes=10' in snippet
    assert "prefix='backbone.'" in snippet


def test_image_classifier_head(source, image):
    pytest.importorskip('mmpretrain')
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmpretrain'):  # other tests may have set another scope
        classifier = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='mmssm.Vim', **SMALL),
            head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=32)))
    checkpoint = original_checkpoint(source)
    result = classifier.load_state_dict(convert_vim_checkpoint(checkpoint), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    classifier.eval()
    with torch.no_grad():
        logits = classifier(image, mode='tensor')
        expected = torch.nn.functional.linear(source(image)[-1], checkpoint['model']['head.weight'],
                                              checkpoint['model']['head.bias'])
    assert torch.equal(logits, expected)


@pytest.mark.parametrize('backbone_only', [False, True])
def test_pretrained_init_cfg(source, tmp_path, backbone_only):
    """The documented ways of loading: prefix='backbone.' takes the full form, no prefix the backbone-only one."""
    path = tmp_path / 'vim.pth'
    state_dict = convert_vim_checkpoint(original_checkpoint(source), backbone_only=backbone_only)
    torch.save({'state_dict': state_dict, 'meta': {}}, path)
    init_cfg = dict(type='Pretrained', checkpoint=str(path))
    if not backbone_only:
        init_cfg['prefix'] = 'backbone.'
    model = Vim(**SMALL, init_cfg=init_cfg)
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_not_a_vim_checkpoint():
    resnet = {'conv1.weight': torch.zeros(64, 3, 7, 7), 'bn1.weight': torch.zeros(64), 'fc.weight': torch.zeros(10, 8)}
    vit = {'patch_embed.proj.weight': torch.zeros(32, 3, 8, 8), 'cls_token': torch.zeros(1, 1, 32),
           'blocks.0.attn.qkv.weight': torch.zeros(96, 32), 'head.weight': torch.zeros(10, 32)}
    for checkpoint in (resnet, {'model': vit}, {}):
        with pytest.raises(ValueError, match=r'Not a Vim checkpoint.*layers\.0\.mixer\.in_proj\.weight'):
            convert_vim_checkpoint(checkpoint)
    with pytest.raises(ValueError, match='Not a Vim checkpoint'):
        convert_vim_checkpoint([1, 2])


def test_already_converted(source):
    converted = convert_vim_checkpoint(original_checkpoint(source))
    with pytest.raises(ValueError, match="already has mmssm's layout"):
        convert_vim_checkpoint({'state_dict': converted})


def test_unknown_key(source):
    checkpoint = original_checkpoint(source)
    checkpoint['model']['dist_token'] = torch.zeros(1, 1, 32)
    with pytest.raises(ValueError, match="does not know.*'dist_token'"):
        convert_vim_checkpoint(checkpoint)
    checkpoint = original_checkpoint(source)
    for index in range(2):
        checkpoint['model'][f'layers.{index}.mixer.extra.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"does not know.*'layers\.0\.mixer\.extra\.weight'"):
        convert_vim_checkpoint(checkpoint)


def test_unsupported_variants(source):
    checkpoint = original_checkpoint(source)
    token = checkpoint['model'].pop('cls_token')
    checkpoint['model'].update(cls_token_head=token, cls_token_tail=token.clone())
    with pytest.raises(ValueError, match='two class tokens'):
        convert_vim_checkpoint(checkpoint)

    checkpoint = original_checkpoint(source)
    for index in range(2):
        checkpoint['model'][f'layers.{index}.mixer.gamma'] = torch.ones(32)
    with pytest.raises(ValueError, match='layer scale'):
        convert_vim_checkpoint(checkpoint)

    checkpoint = original_checkpoint(source)  # bimamba v1: A_b_log without the second conv / projections
    for key in list(checkpoint['model']):
        if any(name in key for name in ('conv1d_b.', 'x_proj_b.', 'dt_proj_b.', 'D_b')):
            del checkpoint['model'][key]
    with pytest.raises(ValueError, match='"v1"'):
        convert_vim_checkpoint(checkpoint)

    checkpoint = original_checkpoint(source)
    del checkpoint['model']['layers.1.mixer.A_b_log']
    with pytest.raises(ValueError, match='layers differ'):
        convert_vim_checkpoint(checkpoint)


def test_cli_end_to_end(source, image, tmp_path):
    src, dst = tmp_path / 'vim_test.pth', tmp_path / 'out' / 'vim_mmssm.pth'
    checkpoint = original_checkpoint(source, rope=False, prefix='module.')
    checkpoint['args'] = argparse.Namespace(model='vim_test_patch8_32', input_size=32)  # as Vim's main.py saves
    torch.save(checkpoint, src)
    result = subprocess.run([sys.executable, str(TOOL), str(src), str(dst), '--backbone-only'],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for text in ('embed_dims: 32', 'depth: 2', 'd_state: 4', 'bidirectional: True', 'norm: rms',
                 'mapped', "type='mmssm.Vim'", 'vim_test_patch8_32'):
        assert text in result.stdout, (text, result.stdout)
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert saved['meta']['backbone_only'] is True and saved['meta']['vim_arch']['depth'] == 2
    model = Vim(**SMALL).eval()
    model.load_state_dict(saved['state_dict'], strict=True)
    assert_same_outputs(source, model, image)


def load_tool():
    spec = importlib.util.spec_from_file_location('vim2mmssm', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_needs_trust_for_pickled_objects(source, tmp_path, capsys):
    tool = load_tool()
    src, dst = tmp_path / 'vim.pth', tmp_path / 'vim_mmssm.pth'
    checkpoint = original_checkpoint(source)
    checkpoint['date'] = datetime.date(2024, 1, 1)  # an object weights_only=True refuses
    torch.save(checkpoint, src)
    with pytest.raises(SystemExit, match='--trust-pickle'):
        tool.main([str(src), str(dst)])
    assert not dst.exists()
    tool.main([str(src), str(dst), '--trust-pickle'])
    assert 'needs weights_only=False' in capsys.readouterr().err
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(saved['state_dict']) >= {'head.fc.weight', 'backbone.norm_f.weight'}


def test_cli_reports_a_non_vim_checkpoint(tmp_path):
    tool = load_tool()
    src = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(8, 3, 3, 3)}}, src)
    with pytest.raises(SystemExit, match='Not a Vim checkpoint'):
        tool.main([str(src), str(tmp_path / 'out.pth')])


# ------------------------------------------------------------------ the official Vim-T layout
OFFICIAL_VIM_T = REPO / 'tests' / 'data' / 'vim_tiny_official_keys.json'


@pytest.fixture(scope='module')
def official_vim_t():
    """A checkpoint with the key names and shapes of hustvl/Vim's released Vim-T (written out from its
    models_mamba.py and mamba_simple.py into the JSON file), random values; as Vim's main.py saves it."""
    spec = json.loads(OFFICIAL_VIM_T.read_text())
    generator = torch.Generator().manual_seed(0)
    weights = {key: torch.randn(shape, generator=generator) for key, shape in spec['keys'].items()}
    return spec, {'model': weights, 'optimizer': {'state': {}}, 'epoch': 299}


def test_official_vim_t_fixture_is_complete(official_vim_t):
    spec, checkpoint = official_vim_t
    keys = spec['keys']
    assert len(keys) == spec['num_keys'] == 6 + 24 * 17 + 1
    assert sum(math.prod(shape) for shape in keys.values()) == 7148008  # 7M parameters with the head, as the paper
    assert keys['pos_embed'] == [1, 14 * 14 + 1, 192] and keys['layers.23.mixer.x_proj_b.weight'] == [12 + 32, 384]


def test_official_vim_t_converts_every_key_and_loads_strictly(official_vim_t):
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    spec, checkpoint = official_vim_t
    result = vim_conversion(checkpoint)
    assert sorted(original for original, _ in result.mapped) == sorted(spec['keys'])  # every key mapped ...
    assert result.dropped == [] and result.ignored_entries == ['optimizer', 'epoch']  # ... none left over
    assert len(set(new for _, new in result.mapped)) == len(spec['keys'])
    arch = result.arch
    assert (arch['embed_dims'], arch['depth'], arch['d_state'], arch['expand'], arch['patch_size']) == \
        (192, 24, 16, 2, 16)
    assert arch['pos_grid'] == (14, 14) and arch['cls_token'] == 'middle' and arch['bidirectional']
    assert arch['norm'] == 'rms' and not arch['rope'] and arch['mixer_cfg'] == {} and arch['num_classes'] == 1000

    # the Vim-T classifier of configs/cls, as mmpretrain builds it
    cfg = Config.fromfile(str(REPO / 'configs' / 'cls' / 'vim-tiny-p16_8xb128_in1k.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = MODELS.build(cfg.model)
    loaded = classifier.load_state_dict(result.state_dict, strict=True)
    assert not loaded.missing_keys and not loaded.unexpected_keys
    own = classifier.state_dict()
    for original, new in result.mapped:
        assert torch.equal(own[new], checkpoint['model'][original]), (original, new)

    backbone_only = convert_vim_checkpoint(checkpoint, backbone_only=True)
    backbone = Vim(**{key: value for key, value in cfg.model.backbone.items() if key != 'type'})
    backbone.load_state_dict(backbone_only, strict=True)


def test_converted_class_token_slot_is_recorded(official_vim_t):
    """The converter records the class token's position, so the weights load into a Vim without one (Vim's
    segmentation setting), at another resolution."""
    _, checkpoint = official_vim_t
    for position, index in (('middle', 98), ('head', 0)):
        converted = convert_vim_checkpoint(checkpoint, backbone_only=True, cls_token=position)
        assert converted._metadata[''] == dict(cls_token=position, pos_embed_grid=[14, 14])
        model = Vim('tiny', img_size=224, cls_token='none', out_type='featmap')
        result = model.load_state_dict(converted, strict=False)
        assert result.unexpected_keys == ['cls_token'] and not result.missing_keys
        pos_embed = checkpoint['model']['pos_embed']
        assert torch.equal(model.pos_embed, torch.cat([pos_embed[:, :index], pos_embed[:, index + 1:]], dim=1))
    assert convert_vim_checkpoint(checkpoint)._metadata['backbone']['cls_token'] == 'middle'
    with pytest.raises(ValueError, match="cls_token must be one of \\('middle', 'head'\\).*got 'tail'"):
        convert_vim_checkpoint(checkpoint, cls_token='tail')
