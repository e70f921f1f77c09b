"""The converter from official MambaVision checkpoints (NVlabs/MambaVision) to mmssm's layout.

"Official" checkpoints are made by tests/test_models/test_backbones/mamba_vision_reference.py (random weights under
the official key names, written independently of mmssm), wrapped as timm / MMEngine save them. The full-size
models are checked on the meta device (shapes only, nothing allocated).
"""
import argparse
import datetime
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmssm.converters import (
    convert_mambavision_checkpoint,
    infer_mambavision_arch,
    mambavision_config_snippet,
    mambavision_conversion,
    verify_mambavision_conversion,
)
from mmssm.models import MambaVision, Vim

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'model_converters' / 'mambavision2mmssm.py'
_spec = importlib.util.spec_from_file_location(
    'mamba_vision_reference', REPO / 'tests' / 'test_models' / 'test_backbones' / 'mamba_vision_reference.py')
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

CFG = dict(dim=8, in_dim=8, in_chans=3, depths=(1, 1, 3, 2), num_heads=(1, 1, 2, 4), window_size=(8, 8, 3, 2),
           mlp_ratio=2, layer_scale=None, layer_scale_conv=None)  # the 'test' arch in the official settings


def load_tool():
    spec = importlib.util.spec_from_file_location('mambavision2mmssm', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_layout(mmssm_state_dict):
    """mmssm MambaVision backbone keys -> the official classifier's (the converter's inverse, written here)."""
    out = {}
    for key, value in mmssm_state_dict.items():
        if key.startswith('norm3.'):
            key = 'norm.' + key[len('norm3.'):]
        else:
            assert key.startswith(('patch_embed.conv_down.', 'levels.')), key
        out[key] = value
    return out


def meta_official_checkpoint(arch):
    """An official-layout state dict of a full-size model, on the meta device (shapes only)."""
    with torch.device('meta'):
        model = MambaVision(arch)
        state_dict = official_layout(model.state_dict())
        state_dict['head.weight'] = torch.empty(1000, model.num_features[3])
        state_dict['head.bias'] = torch.empty(1000)
    return state_dict


@pytest.fixture(scope='module')
def official():
    return reference.official_state_dict(CFG, 'cls', num_classes=7)


@pytest.fixture(scope='module')
def official_dense():
    return reference.official_state_dict(CFG, 'dense', seed=1)


def test_classification_checkpoint_full_and_backbone_only(official):
    result = mambavision_conversion({'state_dict': official, 'args': argparse.Namespace(model='mamba_vision_T'),
                                     'epoch': 309, 'version': 2})
    sd = result.state_dict
    assert result.kind == 'classification' and result.ignored_entries == ['args', 'epoch', 'version']
    assert set(sd) == {'backbone.' + k for k in official if not k.startswith(('norm.', 'head.'))} | \
        {'backbone.norm3.' + k[5:] for k in official if k.startswith('norm.')} | {'head.fc.weight', 'head.fc.bias'}
    assert sd['backbone.norm3.running_var'] is official['norm.running_var']
    assert sd['head.fc.weight'] is official['head.weight']
    assert result.arch['num_classes'] == 7 and result.arch['out_norm'] == 'bn'
    backbone = convert_mambavision_checkpoint(official, backbone_only=True)
    assert set(backbone) == {k[len('backbone.'):] for k in sd if k.startswith('backbone.')}
    MambaVision('test').load_state_dict(backbone, strict=True)


@pytest.mark.parametrize('wrap', ['model', 'module', 'encoder', 'ema'])
def test_checkpoint_wrappings(official, wrap):
    if wrap == 'model':
        checkpoint, kwargs = {'model': official, 'optimizer': {}}, {}
    elif wrap == 'module':
        checkpoint, kwargs = {'state_dict': {'module.' + k: v for k, v in official.items()}}, {}
    elif wrap == 'encoder':
        checkpoint, kwargs = {'encoder.' + k: v for k, v in official.items()}, {}
    else:
        checkpoint = {'state_dict': {k: torch.zeros_like(v) for k, v in official.items()}, 'state_dict_ema': official}
        kwargs = dict(use_ema=True)
    converted = convert_mambavision_checkpoint(checkpoint, **kwargs)
    torch.testing.assert_close(converted['backbone.levels.2.blocks.0.mixer.A_log'],
                               official['levels.2.blocks.0.mixer.A_log'])


def test_dense_checkpoint_keeps_the_decoder(official_dense):
    neck = {'neck.lateral_convs.0.conv.weight': torch.zeros(4, 8, 1, 1)}
    heads = {'decode_head.conv_seg.weight': torch.zeros(3, 4, 1, 1), 'auxiliary_head.conv_seg.bias': torch.zeros(3)}
    checkpoint = {'meta': {'mmseg_version': '1.2.2'},
                  'state_dict': {**{'backbone.' + k: v for k, v in official_dense.items()}, **neck, **heads}}
    result = mambavision_conversion(checkpoint)
    assert result.kind == 'segmentation'
    assert result.arch['out_indices'] == [0, 1, 2, 3] and result.arch['out_norm'] == 'ln2d'
    assert result.arch['arch_dict']['window_size'] == [8, 8, 64, 32]  # the official segmentation configs'
    assert sorted(result.kept) == sorted([*neck, *heads])
    assert result.state_dict['backbone.norm2.weight'] is official_dense['outnorm2.weight']
    assert not any('outnorm' in k for k in result.state_dict)
    verify_mambavision_conversion(result)
    backbone = convert_mambavision_checkpoint(checkpoint, backbone_only=True)
    assert not any(k.startswith(('neck.', 'decode_head.', 'backbone.')) for k in backbone)
    MambaVision('test', out_indices=(0, 1, 2, 3), out_norm='ln2d').load_state_dict(backbone, strict=True)
    detection = dict(checkpoint['state_dict'], **{'roi_head.bbox_head.0.fc_cls.weight': torch.zeros(2, 2)})
    del detection['decode_head.conv_seg.weight'], detection['auxiliary_head.conv_seg.bias']
    assert mambavision_conversion(detection).arch['arch_dict']['window_size'] == [8, 8, 112, 56]


@pytest.mark.parametrize('arch', ['tiny', 'tiny2', 'small', 'base', 'large', 'large2', 'large3-256'])
def test_full_size_models_are_recognized(arch):
    result = mambavision_conversion(meta_official_checkpoint(arch))
    assert result.arch['arch'] == arch and result.arch['num_classes'] == 1000
    assert result.arch['mixer_cfg'] == {}
    verify_mambavision_conversion(result)  # strict load on the meta device


@pytest.mark.parametrize('arch, hint, expected', [
    ('large2', 'mambavision_L2_21k_240m_512.pth.tar', 'large2-512'),
    ('large2', 'mambavision_large2_1k.pth.tar', 'large2'),
    ('large3-256', 'mambavision_L3_21k_740m_512.pth.tar', 'large3-512'),
    ('large3-256', 'mambavision_L3_21k_740m_256.pth.tar', 'large3-256'),
])
def test_window_sizes_from_the_name(arch, hint, expected):
    result = mambavision_conversion(meta_official_checkpoint(arch), name_hint=hint)
    assert result.arch['arch'] == expected
    assert any('differ only in their window sizes' in note for note in result.arch['notes'])


def test_recorded_model_name_wins_over_the_file_name():
    checkpoint = {'state_dict': meta_official_checkpoint('large3-256'),
                  'args': argparse.Namespace(model='mamba_vision_L3_512_21k')}
    assert infer_mambavision_arch(checkpoint)['arch'] == 'large3-512'
    assert mambavision_conversion(checkpoint, name_hint='x_256.pth').arch['arch'] == 'large3-512'


def test_custom_model_is_described_by_a_dict(official):
    arch = infer_mambavision_arch(official)
    assert arch['arch']['embed_dims'] == 8 and arch['arch']['depths'] == [1, 1, 3, 2]
    assert arch['arch']['num_heads'] is None and 'num_heads and window_size cannot be told' in arch['notes'][0]
    assert arch['candidates'] == []


def test_config_snippet_is_a_valid_config(official, official_dense):
    for checkpoint, backbone_only in ((meta_official_checkpoint('tiny'), False), (official, True),
                                      ({'backbone.' + k: v for k, v in official_dense.items()}, False)):
        result = mambavision_conversion(checkpoint, backbone_only=backbone_only)
        namespace = {}
        exec(mambavision_config_snippet(result.arch, backbone_only, 'x.pth'), namespace)
        backbone = namespace['model']['backbone']
        assert backbone['type'] == 'mmssm.MambaVision'
        with torch.device('meta'):
            kwargs = {k: v for k, v in backbone.items() if k not in ('type', 'init_cfg')}
            if isinstance(kwargs['arch'], dict):
                kwargs['arch'] = dict(kwargs['arch'], num_heads=[1, 1, 1, 1], window_size=[8, 8, 7, 7])
            MambaVision(**kwargs)
    assert namespace['model'].get('neck') is None and backbone['out_norm'] == 'ln2d'


# ------------------------------------------------------------------------------------------------ errors
def test_a_vim_checkpoint_is_refused():
    vim = {'model': Vim('test', img_size=32, patch_size=8).state_dict()}
    with pytest.raises(ValueError, match=re.escape('it has the keys of a Vim (hustvl/Vim) model') + '.*vim2mmssm'):
        mambavision_conversion(vim)


def test_a_converted_checkpoint_is_refused(official, official_dense):
    with pytest.raises(ValueError, match="already in mmssm's layout"):
        mambavision_conversion(convert_mambavision_checkpoint(official))
    with pytest.raises(ValueError, match="already in mmssm's layout"):
        mambavision_conversion(convert_mambavision_checkpoint(official, backbone_only=True))
    dense = convert_mambavision_checkpoint({'backbone.' + k: v for k, v in official_dense.items()})
    with pytest.raises(ValueError, match="already in mmssm's layout"):
        mambavision_conversion(dense)


@pytest.mark.parametrize('checkpoint, match', [
    ([1, 2], 'expected a dict'),
    ({'epoch': 3, 'optimizer': {}}, "no 'state_dict' or 'model' entry"),
    ({'conv.weight': torch.zeros(1)}, r"Not a MambaVision checkpoint: no 'patch_embed.conv_down.0.weight'.*"
                                      r"\['conv.weight'\]"),
])
def test_not_a_checkpoint(checkpoint, match):
    with pytest.raises(ValueError, match=match):
        mambavision_conversion(checkpoint)


def test_unknown_or_unofficial_weights_are_refused(official):
    with pytest.raises(ValueError, match=r"Keys that no official MambaVision backbone has: \['pos_embed'\]"):
        mambavision_conversion({**official, 'pos_embed': torch.zeros(1)})
    swapped = dict(official)  # stage 3 (depth 2) with attention first: not the official split
    for key in [k for k in official if k.startswith('levels.3.blocks.')]:
        del swapped[key]
    for key, value in official.items():
        if key.startswith('levels.3.blocks.0.'):
            swapped[key.replace('blocks.0.', 'blocks.1.')] = value
        elif key.startswith('levels.3.blocks.1.'):
            swapped[key.replace('blocks.1.', 'blocks.0.')] = value
    with pytest.raises(ValueError, match=r"Stage 3 of this checkpoint has blocks \['attention', 'mamba'\], not the "
                                         r'official split'):
        mambavision_conversion(swapped)
    with pytest.raises(ValueError, match="use_ema=True, but the checkpoint has no 'state_dict_ema'"):
        mambavision_conversion({'state_dict': official}, use_ema=True)


def test_verification_catches_weights_that_do_not_fit(official):
    result = mambavision_conversion(official)
    del result.state_dict['backbone.levels.2.blocks.0.mixer.D']
    with pytest.raises(ValueError, match='levels.2.blocks.0.mixer.D'):
        verify_mambavision_conversion(result)


# ------------------------------------------------------------------------------------------------ the tool
def test_tool_converts_a_timm_training_checkpoint(tmp_path, official, capsys):
    src, dst = tmp_path / 'mambavision_test_1k.pth.tar', tmp_path / 'out' / 'converted.pth'
    torch.save({'state_dict': official, 'args': argparse.Namespace(model='custom', lr=1e-3), 'epoch': 1}, src)
    load_tool().main([str(src), str(dst)])
    out = capsys.readouterr().out
    assert 'Checked: the backbone weights load strictly into mmssm.MambaVision.' in out
    assert "type='mmssm.MambaVision'" in out and "prefix='backbone.'" in out
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert saved['meta']['kind'] == 'classification'
    expected = convert_mambavision_checkpoint(official)
    assert saved['state_dict'].keys() == expected.keys()
    assert all(torch.equal(saved['state_dict'][k], v) for k, v in expected.items())


def test_tool_refuses_unsafe_pickles_and_vim(tmp_path, official):
    tool = load_tool()
    src = tmp_path / 'unsafe.pth.tar'
    torch.save({'state_dict': official, 'saved_at': datetime.datetime(2025, 1, 1)}, src)
    message = (r'(?s)cannot be loaded with torch.load\(weights_only=True\): it holds Python objects beside tensors '
               r'\(it needs datetime.datetime\).*--trust-pickle')
    with pytest.raises(SystemExit, match=message):
        tool.main([str(src), str(tmp_path / 'a.pth')])
    tool.main([str(src), str(tmp_path / 'a.pth'), '--trust-pickle', '--backbone-only'])
    assert 'head.fc.weight' not in torch.load(tmp_path / 'a.pth', weights_only=True)['state_dict']
    vim = tmp_path / 'vim.pth'
    torch.save({'model': Vim('test', img_size=32, patch_size=8).state_dict()}, vim)
    with pytest.raises(SystemExit, match='vim2mmssm'):
        tool.main([str(vim), str(tmp_path / 'b.pth')])


@pytest.mark.slow  # a fresh interpreter importing mmcv / mmengine: about 10 s
def test_tool_runs_as_a_script(tmp_path, official):
    src = tmp_path / 'model.pth'
    torch.save(official, src)
    done = subprocess.run([sys.executable, str(TOOL), str(src), str(tmp_path / 'c.pth'), '--backbone-only'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert 'Converted' in done.stdout
