"""benchmarks/token_pruning_gpu.py: its CPU smoke run (test archs) for Vim and PlainMamba, dense and ToP-ViM."""
import importlib.util
import json
import os.path as osp

import pytest

import mmssm  # noqa: F401  (first: it guards the mmpretrain import that mmdet and mmseg make)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
spec = importlib.util.spec_from_file_location('token_pruning_gpu',
                                              osp.join(ROOT, 'benchmarks', 'token_pruning_gpu.py'))
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


@pytest.mark.parametrize('model', ['vim', 'plainmamba'])
def test_cpu_smoke_run_writes_dense_and_pruned_rows(model, tmp_path, capsys):
    out = tmp_path / 'result.json'
    benchmark.main(['--model', model, '--device', 'cpu', '--arch', 'test', '--batch', '2', '--size', '64',
                    '--dtype', 'fp32', '--min-iters', '1', '--min-seconds', '0', '--warmup', '0', '--json', str(out)])
    result = json.loads(out.read_text())
    assert result['meta']['model'] == model
    dense, pruned = result['rows']
    assert (dense['variant'], pruned['variant']) == ('dense', 'ToP')
    assert pruned['layers'] == [0] and pruned['keep_ratio'] == 0.5
    assert 0 < pruned['scan_gflops'] < dense['scan_gflops'] and 0 < pruned['flops_reduction'] < 0.5
    assert all(row['img_per_s'] > 0 for row in result['rows'])
    assert '| test | ToP | [0] | 0.5 |' in capsys.readouterr().out


def test_every_arch_has_a_schedule_within_its_depth():
    from mmssm.models.backbones.plain_mamba import PlainMamba
    from mmssm.models.backbones.vim import Vim
    for family, backbone in (('vim', Vim), ('plainmamba', PlainMamba)):
        for arch, (layers, keep) in benchmark.FAMILIES[family]['schedules'].items():
            depth = benchmark.FAMILIES[family]['archs'].get(arch, backbone.arch_zoo[arch])['depth']
            assert max(layers) < depth - 1 and 0 < keep < 1, (family, arch)
