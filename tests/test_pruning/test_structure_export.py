"""Structured groups and export: zeroing a unit's kill members makes it dead (output-exact removal), in float64."""
import copy

import pytest
import torch

from mmssm.models.backbones.mamba_vision import MambaVision
from mmssm.models.backbones.vim import Vim
from mmssm.pruning import dead_units, export_pruned, member_slice, structured_groups


def _vim(bidirectional=True, pruned_widths=None, **kwargs):
    torch.manual_seed(0)
    return Vim(arch='test', img_size=32, patch_size=8, bidirectional=bidirectional, out_type='featmap',
               pruned_widths=pruned_widths, **kwargs).double().eval()


def _mamba_vision(mixer='s6', pruned_widths=None, window_size=(2, 2, 1, 1), **kwargs):
    torch.manual_seed(0)
    arch = dict(embed_dims=8, stem_channels=8, depths=(1, 1, 2, 2), num_heads=(1, 2, 2, 4), window_size=window_size)
    return MambaVision(arch=arch, mixer=mixer, out_indices=3, pruned_widths=pruned_widths, **kwargs).double().eval()


def _mv_variant(**kwargs):
    # 48 px: a 3x3 stage-3 map in 2x2 windows, padded to 4x4 (the shifted blocks really shift)
    return lambda **kw: _mamba_vision('s6', window_size=(2, 2, 2, 2), **kwargs, **kw), (1, 3, 48, 48)


def _randomize_norms(model):
    """BatchNorm statistics and affine parameters away from their identity init (so a wrong slice shows)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                for t in (module.weight, module.bias, module.running_mean):
                    t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen, dtype=torch.float64) + .5)
    return model


MODELS = {
    'vim_bi': (lambda **kw: _vim(True, **kw), (1, 3, 32, 32)),
    'vim_uni': (lambda **kw: _vim(False, **kw), (1, 3, 32, 32)),
    'vim_se': (lambda **kw: _vim(True, se_ratio=4, **kw), (1, 3, 32, 32)),
    'vim_inverted_residual': (lambda **kw: _randomize_norms(_vim(True, conv_type='inverted_residual', **kw)),
                              (1, 3, 32, 32)),
    'mv_s6': (lambda **kw: _mamba_vision('s6', **kw), (1, 3, 32, 32)),
    'mv_s4d': (lambda **kw: _mamba_vision('s4d', **kw), (1, 3, 32, 32)),
    'mv_s5': (lambda **kw: _mamba_vision('s5', **kw), (1, 3, 32, 32)),
    'mv_shifted_window': _mv_variant(attention='shifted_window', num_registers=2),
    'mv_sliding_window': _mv_variant(attention='sliding_window'),
    'mv_conv_relative': _mv_variant(attention='conv_relative'),
    'mv_convnext': _mv_variant(conv_block='convnext'),
}


def _kill_random(model, groups, fraction=0.5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    killed = {}
    with torch.no_grad():
        for group in groups:
            units = torch.randperm(group.size, generator=gen)[:max(1, int(group.size * fraction))].tolist()
            if len(units) == group.size:
                units = units[:-1]
            for unit in units:
                for member in group.members:
                    if member.kill:
                        params[member.param][member_slice(member, unit)] = 0
            killed[group.name] = sorted(units)
    return killed


def _out(model, x):
    out = model(x)
    return out[-1] if isinstance(out, (tuple, list)) else out


@pytest.mark.parametrize('name', list(MODELS))
def test_groups_kill_sets_are_exact(name):
    """Perturbing every non-kill member slice of dead units leaves the output unchanged: the kill set is enough."""
    build, shape = MODELS[name]
    model = build()
    groups = structured_groups(model)
    kinds = {g.kind for g in groups}
    assert 'ssm_channel' in kinds
    if name.startswith('mv'):
        assert {'attn_head', 'mlp_hidden', 'conv_channel'} <= kinds
    params = dict(model.named_parameters())
    params.update(model.named_buffers())  # BN running statistics are members of conv-block channels
    for group in groups:
        for member in group.members:
            assert member.param in params, member
            extent = member.offset + group.size * member.width
            assert extent <= params[member.param].shape[member.dim], (member, params[member.param].shape)
    killed = _kill_random(model, groups)
    for group in groups:
        assert dead_units(model, group) == killed[group.name]
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = _out(model, x)
    with torch.no_grad():
        for group in groups:
            for unit in killed[group.name]:
                for member in group.members:
                    if not member.kill:
                        target = params[member.param][member_slice(member, unit)]
                        # running variances stay positive (a NaN times the zero scale is still NaN)
                        target.copy_(torch.rand_like(target) + 0.5 if 'running_var' in member.param
                                     else torch.randn_like(target))
    torch.testing.assert_close(_out(model, x), ref, rtol=0, atol=1e-12)
    # and a live unit's non-kill member does matter (the test can fail)
    group = next(g for g in groups if g.kind == 'ssm_channel')
    live = next(u for u in range(group.size) if u not in killed[group.name])
    member = next(m for m in group.members if m.param.endswith('in_proj.weight'))
    with torch.no_grad():
        target = params[member.param][member_slice(member, live)]
        target += torch.randn_like(target)  # not a constant: LayerNorm outputs sum to zero
    assert (_out(model, x) - ref).abs().max() > 1e-8


def test_vim_groups_cover_both_directions():
    names = {m.param.split('.', 2)[-1] for g in structured_groups(_vim(True)) for m in g.members if m.kill}
    assert names == {'mixer.out_proj.weight', 'mixer.x_proj.weight', 'mixer.x_proj_b.weight'}
    names = {m.param.split('.', 2)[-1] for g in structured_groups(_vim(False)) for m in g.members if m.kill}
    assert names == {'mixer.out_proj.weight', 'mixer.x_proj.weight'}


@pytest.mark.parametrize('name', list(MODELS))
def test_export_equals_masked_and_rebuilds_from_widths(name):
    """Exported model: fewer parameters, same float64 output; the constructor with its widths loads it strictly."""
    build, shape = MODELS[name]
    model = build()
    groups = structured_groups(model)
    killed = _kill_random(model, groups)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = _out(model, x)
    exported, widths = export_pruned(copy.deepcopy(model))
    assert sum(p.numel() for p in exported.parameters()) < sum(p.numel() for p in model.parameters())
    for group in structured_groups(exported):
        original = next(g for g in groups if g.name == group.name)
        assert group.size == original.size - len(killed[group.name])
    torch.testing.assert_close(_out(exported, x), ref, rtol=0, atol=1e-12)
    rebuilt = build(pruned_widths=widths)
    rebuilt.load_state_dict(exported.state_dict(), strict=True)
    torch.testing.assert_close(_out(rebuilt.double().eval(), x), ref, rtol=0, atol=1e-12)


def test_pruned_widths_errors():
    with pytest.raises(ValueError, match=r"unknown block '7'"):
        _vim(pruned_widths={'7': {'d_inner': 8}})
    with pytest.raises(ValueError, match=r"pruned_widths\['0'\]\['d_inner'\] must be an int in \[1, 64\]"):
        _vim(pruned_widths={'0': {'d_inner': 65}})
    with pytest.raises(ValueError, match='and even'):
        _mamba_vision(pruned_widths={'2.0': {'d_inner': 15}})
    with pytest.raises(ValueError, match=r"pruned_widths\['0.0'\]\['conv_hidden'\] must be an int in \[1, 8\]"):
        _mamba_vision(pruned_widths={'0.0': {'conv_hidden': 9}})
    narrow = _mamba_vision(pruned_widths={'0.0': {'conv_hidden': 3}}).levels[0].blocks[0]  # conv block widths
    assert (narrow.conv1.out_channels, narrow.norm1.num_features, narrow.conv2.in_channels) == (3, 3, 3)
    assert narrow.norm1.running_var.shape == (3,) and narrow.conv2.weight.shape == (8, 3, 3, 3)


def test_2_4_pattern():
    from mmssm.pruning.semi_structured import is_2_4, mask_2_4, prune_2_4
    weight = torch.randn(8, 16, generator=torch.Generator().manual_seed(4))
    mask = mask_2_4(weight)
    groups, kept = weight.abs().reshape(8, 4, 4), mask.reshape(8, 4, 4)
    assert (kept.sum(-1) == 2).all()
    # every kept magnitude is >= every dropped one in its group (independent of topk's internals)
    assert (groups.masked_fill(~kept, float('inf')).amin(-1) >= groups.masked_fill(kept, -1).amax(-1)).all()
    assert is_2_4(weight * mask) and not is_2_4(weight)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 10))
    assert prune_2_4(model) == ['0']  # the 10-wide layer is below the kernels' minimum
    assert is_2_4(model[0].weight) and not is_2_4(model[2].weight)


TINY_CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmssm.models'], allow_failed_imports=False)
model = dict(type='mmpretrain.ImageClassifier',
             backbone=dict(type='mmssm.MambaVision', out_indices=3, mixer='s6',
                           arch=dict(embed_dims=8, stem_channels=8, depths=(1, 1, 2, 2), num_heads=(1, 2, 2, 4),
                                     window_size=(2, 2, 1, 1))),
             neck=dict(type='mmpretrain.GlobalAveragePooling'),
             head=dict(type='mmpretrain.LinearClsHead', num_classes=5, in_channels=64))
"""


def _tool(tmp_path):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        'prune_export_tool', Path(__file__).resolve().parents[2] / 'tools/analysis/prune_export.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    config = tmp_path / 'tiny_mv.py'
    config.write_text(TINY_CONFIG)
    from mmengine.config import Config
    model = tool.build_model(Config.fromfile(str(config))).eval()
    return tool, config, model


def test_tool_end_to_end(tmp_path, capsys):
    from mmengine.config import Config
    tool, config, model = _tool(tmp_path)
    killed = _kill_random(model, structured_groups(model))
    torch.save(model.state_dict(), tmp_path / 'masked.pth')
    exported, widths = tool.main([str(config), str(tmp_path / 'masked.pth'), str(tmp_path / 'out'), '--img-size', '32'])
    printed = capsys.readouterr().out
    assert 'max |exported - masked|' in printed and 'parameters:' in printed
    assert widths['2.0']['d_inner'] == 32 - 2 * len(killed['backbone.levels.2.blocks.0.mixer.d_inner'])
    cfg = Config.fromfile(str(tmp_path / 'out' / 'tiny_mv_pruned.py'))
    assert cfg.model.backbone.pruned_widths == widths
    rebuilt = tool.build_model(cfg).eval()
    state = torch.load(tmp_path / 'out' / 'pruned.pth', weights_only=True)['state_dict']
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.extract_feat(x)[-1], model.extract_feat(x)[-1], rtol=1e-5, atol=1e-5)


def test_tool_errors(tmp_path):
    tool, config, model = _tool(tmp_path)
    args = [str(config), str(tmp_path / 'ckpt.pth'), str(tmp_path / 'out')]
    torch.save(model.state_dict(), tmp_path / 'ckpt.pth')
    with pytest.raises(SystemExit, match='no unit is dead, so exporting is a no-op'):
        tool.main(args)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('weight') and param.dim() > 1:
                param.mul_(torch.rand_like(param) > 0.5)
    torch.save(model.state_dict(), tmp_path / 'ckpt.pth')
    with pytest.raises(SystemExit, match='the mask is unstructured'):
        tool.main(args)
    torch.save({'state_dict': {'foo': torch.zeros(1)}}, tmp_path / 'ckpt.pth')
    with pytest.raises(SystemExit, match='does not fit the model of the config'):
        tool.main(args)


@pytest.mark.slow
def test_benchmark_cpu_smoke(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / 'bench.json'
    subprocess.run([sys.executable, 'benchmarks/prune_export_gpu.py', '--device', 'cpu', '--arch', 'test', '--batch',
                    '2', '--size', '64', '--dtype', 'fp32', '--warmup', '1', '--repeats', '2', '--out', str(out)],
                   cwd=root, check=True, capture_output=True)
    runs = json.loads(out.read_text())['runs']
    assert {(r['family'], r['variant']) for r in runs} == {
        (f, v) for f in ('vim', 'mambavision') for v in ('dense', 'struct50', 'semi24', 'unstruct50')}
    assert all(r['img_per_s'] > 0 for r in runs if r['variant'] != 'semi24')


def test_tool_semi_structured_cpu(tmp_path, capsys):
    from mmssm.pruning.semi_structured import eligible_linears, is_2_4
    tool, config, model = _tool(tmp_path)
    _kill_random(model, structured_groups(model))
    torch.save(model.state_dict(), tmp_path / 'masked.pth')
    exported, _ = tool.main([str(config), str(tmp_path / 'masked.pth'), str(tmp_path / 'out'), '--img-size', '32',
                             '--semi-structured-2-4'])
    if not torch.cuda.is_available():
        assert 'the pattern is applied and checked only' in capsys.readouterr().out
    names = eligible_linears(exported)
    state = torch.load(tmp_path / 'out' / 'pruned.pth', weights_only=True)['state_dict']
    assert names and all(is_2_4(state[f'{name}.weight']) for name in names)


@pytest.mark.parametrize('name, kill, member', [
    ('vim_se', 'mixer.se.fc1.weight', 'mixer.se.fc2.bias'),
    ('vim_inverted_residual', 'mixer.conv1d_b.expand.weight', 'mixer.conv1d.project_norm.running_var'),
    ('mv_conv_relative', 'mixer.proj.weight', 'mixer.crpe.weight'),
    ('mv_shifted_window', 'mixer.proj.weight', 'mixer.qkv.bias'),
    ('mv_sliding_window', 'mixer.proj.weight', 'mixer.qkv.weight'),
    ('mv_convnext', 'pwconv2.weight', 'pwconv1.bias'),
])
def test_variant_parts_are_in_the_groups(name, kill, member):
    """The variants' own parts are units' members (so the exactness tests above cover them)."""
    groups = structured_groups(MODELS[name][0]())
    kills = {m.param for g in groups for m in g.members if m.kill}
    members = {m.param for g in groups for m in g.members if not m.kill}
    assert any(p.endswith(kill) for p in kills), sorted(kills)
    assert any(p.endswith(member) for p in members), sorted(members)


def test_a_missing_kill_member_breaks_exactness():
    """Control for the SE kill: without ``se.fc1[:, c]`` a 'dead' channel still moves every SE gate."""
    model = MODELS['vim_se'][0]()
    group = next(g for g in structured_groups(model) if g.kind == 'ssm_channel')
    params = dict(model.named_parameters())
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for m in group.members:
            if m.kill and 'se.fc1' not in m.param:
                params[m.param][member_slice(m, 0)] = 0
        ref = _out(model, x)
        target = params[next(m.param for m in group.members if m.param.endswith('in_proj.weight'))]
        target[0] += torch.randn_like(target[0])
    assert (_out(model, x) - ref).abs().max() > 1e-8
