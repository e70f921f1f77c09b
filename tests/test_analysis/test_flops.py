"""FLOP counting with the selective scan (mmssm.analysis.flops) and the tools/analysis CLIs (get_flops.py,
benchmark.py) on shrunk copies of the real configs."""
import contextlib
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info
from mmengine.analysis import complexity_analysis as mmengine_complexity

import mmssm.ops.selective_scan as scan_package
from mmssm.analysis.flops import (
    COMPILED_SCAN_OP,
    SCAN_OP,
    analyze_flops,
    count_scan_flops,
    scan_flop_counting,
    scan_flops,
    scan_flops_per_element,
)
from mmssm.models.backbones.vim import Vim
from mmssm.ops.selective_scan import METHODS, selective_scan

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')

# batch 2, dim 3, L 5, N 4, with D and z: 2 * 3 * 5 * (4 * per_element + per_token), by hand from the docstring
# of count_scan_flops: per_element = 1 (x) + discretization + input + 1 (state) + 1 (C); per_token = taps + 2.
HAND_COUNTS = {
    'zoh': 30 * (4 * (1 + 1 + 1 + 2) + (1 + 2)),           # 30 * 23 = 690
    'bilinear': 30 * (4 * (1 + 4 + 4 + 2) + (2 + 2)),      # 30 * 48 = 1440
    'foh': 30 * (4 * (1 + 7 + 4 + 2) + (2 + 2)),           # 30 * 60 = 1800
    'poly': 30 * (4 * (1 + 14 + 6 + 2) + (3 + 2)),         # 30 * 97 = 2910
    'highorder': 30 * (4 * (1 + 24 + 8 + 2) + (4 + 2)),    # 30 * 146 = 4380
    'rk4': 30 * (4 * (1 + 15 + 8 + 2) + (4 + 2)),          # 30 * 110 = 3300
}


@pytest.mark.parametrize('method', METHODS)
def test_scan_formula_hand_computed(method):
    expected = dict(zoh=690, bilinear=1440, foh=1800, poly=2910, highorder=4380, rk4=3300)[method]
    assert HAND_COUNTS[method] == expected
    assert count_scan_flops(2, 3, 5, 4, method, bidirectional=False, with_d=True, with_z=True) == expected
    assert count_scan_flops(2, 3, 5, 4, method, bidirectional=True, with_d=True, with_z=True) == 2 * expected
    # without D and z: two FLOPs less per (batch, dim, L)
    assert count_scan_flops(2, 3, 5, 4, method, with_d=False, with_z=False) == expected - 2 * 30


def test_scan_formula_vim_tiny_and_errors():
    # Vim-T at 224: 197 tokens, d_inner 384, N 16, 24 blocks x 2 directions, zoh: 384 * 197 * (16 * 5 + 3) each
    assert scan_flops_per_element('zoh') == 5
    assert 24 * count_scan_flops(1, 384, 197, 16, 'zoh', bidirectional=True) == 48 * 384 * 197 * 83 == 301381632
    with pytest.raises(ValueError, match='discretization'):
        count_scan_flops(1, 2, 3, 4, 'euler')
    with pytest.raises(ValueError, match='length'):
        count_scan_flops(1, 2, -3, 4)


def test_context_keeps_results_and_restores():
    torch.manual_seed(0)
    u, delta, z = torch.randn(2, 6, 9), torch.randn(2, 6, 9), torch.randn(2, 6, 9)
    A, B, C = -torch.rand(6, 4) - 0.5, torch.randn(2, 2, 4, 9), torch.randn(2, 2, 4, 9)
    original = scan_package._selective_scan_torch
    expected = selective_scan(u, delta, A, B, C, D=torch.ones(6), z=z, discretization='poly', reverse=True)
    with scan_flop_counting():
        assert scan_package._selective_scan_torch is not original
        assert SCAN_OP in mmengine_complexity._DEFAULT_SUPPORTED_FLOP_OPS
        with scan_flop_counting():  # nesting keeps the real implementation underneath
            inside = selective_scan(u, delta, A, B, C, D=torch.ones(6), z=z, discretization='poly', reverse=True)
    assert torch.equal(inside, expected)
    assert scan_package._selective_scan_torch is original
    assert SCAN_OP not in mmengine_complexity._DEFAULT_SUPPORTED_FLOP_OPS


def _tiny_vim(**kwargs):
    torch.manual_seed(0)
    return Vim(arch='test', img_size=32, patch_size=8, **kwargs).eval()


@pytest.mark.parametrize('method,bidirectional', [('zoh', True), ('rk4', True), ('bilinear', False)])
def test_vim_count_includes_scan_exactly(method, bidirectional):
    model = _tiny_vim(discretization=method, bidirectional=bidirectional)
    inputs = torch.randn(1, 3, 32, 32)
    with_scan = analyze_flops(model, (inputs,))
    without_handle = analyze_flops(model, (inputs,), count_scan=False)
    plain = FlopAnalyzer(model, (inputs,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    # arch 'test': 2 blocks, d_inner 64, N 4; 16 patches + the class token
    per_block = count_scan_flops(1, 64, 17, 4, method, bidirectional=bidirectional)
    assert scan_flops(with_scan) == 2 * per_block > 0
    assert with_scan.total() - without_handle.total() == 2 * per_block
    assert plain.total() == without_handle.total()  # the analyzer counts nothing of the scan by itself
    assert SCAN_OP in without_handle.unsupported_ops()
    for block in range(2):
        name = f'layers.{block}.mixer'
        assert scan_flops(with_scan, name) == per_block
        assert with_scan.total(name) == without_handle.total(name) + per_block
    # the same through mmengine's own get_model_complexity_info, inside the context
    with scan_flop_counting(), torch.no_grad():
        info = get_model_complexity_info(model, inputs=(inputs,), show_table=False, show_arch=False)
    assert info['flops'] == with_scan.total()


def test_scan_that_escapes_the_trace_is_an_error(monkeypatch):
    import mmssm.analysis.flops as flops
    monkeypatch.setattr(flops, 'scan_flop_counting', lambda register_handle=True: contextlib.nullcontext())
    with pytest.raises(RuntimeError, match='no selective scan reached the trace'):
        analyze_flops(_tiny_vim(), (torch.randn(1, 3, 32, 32),))


class _TorchStandIn:
    """A stand-in for the triton / cuda backend module of mmssm.ops.selective_scan.compiled, computing each
    direction with the torch path, so that on a CPU the model's scan goes through the custom op
    mmssm::selective_scan_fwd as on a GPU."""

    def __init__(self, torch_scan):
        self.torch_scan = torch_scan
        self.calls = 0

    def forward(self, u, delta, A, B, C, D, delta_bias, z, softplus, method, reverse, save, gap=None,
                stacked=False, a_log=False, merged=False):  # (the triton module's options)
        assert gap is None
        self.calls += 1
        if a_log:  # A holds the A_log parameters, D and delta_bias the parameters' dtype
            A = [-torch.exp(a.float()) for a in A]
            D = [d.float() if d is not None else None for d in D]
            delta_bias = [b.float() if b is not None else None for b in delta_bias]
        outs, lasts = [], []
        for d in range(len(u)):
            y, last = self.torch_scan(u[d], delta[d], A[d], B[d], C[d], D[d], z[d] if z else None, delta_bias[d],
                                      softplus, method, reverse[d], None)
            outs.append(y)
            lasts.append(last)
        saved = [u[0].new_zeros(0, dtype=torch.float32) for _ in u]
        if merged:  # the outputs in the triton module's merged layout
            from mmssm.ops.selective_scan.triton_scan import merged_rows
            out = merged_rows(len(u), *u[0].shape, dtype=u[0].dtype, device=u[0].device)
            return out.copy_(torch.stack(outs)), torch.stack(lasts), torch.stack(saved)
        if stacked:
            return torch.stack(outs), torch.stack(lasts), torch.stack(saved)
        return outs, lasts, saved

    def saved_shape(self, batch, dim, length, state, save):
        return (0,)


def take_compiled_path(monkeypatch):
    """From here on every scan takes the GPU backends' route (the 'triton' backend, through the custom op)."""
    import mmssm.ops.selective_scan.compiled as compiled
    stand_in = _TorchStandIn(scan_package._selective_scan_torch)
    monkeypatch.setattr(scan_package, '_resolve_backend', lambda backend, *tensors: 'triton')
    monkeypatch.setattr(compiled, 'backend_module', lambda backend: stand_in)
    return stand_in


@pytest.mark.parametrize('method,bidirectional', [('zoh', True), ('rk4', True), ('bilinear', False)])
def test_compiled_scan_is_counted_as_the_torch_one(monkeypatch, method, bidirectional):
    model = _tiny_vim(discretization=method, bidirectional=bidirectional)
    inputs = torch.randn(1, 3, 32, 32)
    reference = analyze_flops(model, (inputs,))  # the CPU route
    with torch.no_grad():
        expected_out = model(inputs)
    compiled_path = take_compiled_path(monkeypatch)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), expected_out)  # the stand-in computes the same
    assert compiled_path.calls == 2
    analyzer = analyze_flops(model, (inputs,))
    assert compiled_path.calls > 2  # the trace went through the custom op
    per_block = count_scan_flops(1, 64, 17, 4, method, bidirectional=bidirectional)
    assert scan_flops(analyzer) == scan_flops(reference) == 2 * per_block
    assert analyzer.total() == reference.total()
    assert scan_flops(analyzer, 'layers.1.mixer') == per_block
    uncounted = analyze_flops(model, (inputs,), count_scan=False)
    assert COMPILED_SCAN_OP in uncounted.unsupported_ops() and SCAN_OP not in uncounted.unsupported_ops()
    assert uncounted.total() == analyzer.total() - 2 * per_block
    with scan_flop_counting(), torch.no_grad():  # the handle is also registered for get_model_complexity_info
        info = get_model_complexity_info(model, inputs=(inputs,), show_table=False, show_arch=False)
    assert info['flops'] == analyzer.total()
    assert COMPILED_SCAN_OP not in mmengine_complexity._DEFAULT_SUPPORTED_FLOP_OPS


def _compiled_backend_available():
    if not torch.cuda.is_available():
        return False
    from mmssm.ops.selective_scan import available_backends
    return available_backends('cuda') != ['torch']


@pytest.mark.gpu
def test_get_flops_on_cuda_with_a_compiled_scan():
    """tools/analysis/get_flops.py --device cuda, where the scan runs on the CUDA extension or Triton: the same
    count as on the CPU."""
    if not _compiled_backend_available():
        pytest.skip('no compiled scan backend (triton or the CUDA extension) on this machine')
    model = _tiny_vim().cuda()
    uncounted = analyze_flops(model, (torch.randn(1, 3, 32, 32, device='cuda'),), count_scan=False)
    assert COMPILED_SCAN_OP in uncounted.unsupported_ops()  # the trace holds the compiled op
    outputs = {}
    for device in ('cpu', 'cuda'):
        result = subprocess.run([sys.executable, *COMMANDS['flops_cls'], '--device', device], cwd=ROOT, env=ENV,
                                capture_output=True, text=True, timeout=600)
        outputs[device] = _ok((result.returncode, result.stdout, result.stderr))
    from mmssm.ops import causal_conv1d
    # with the causal-conv1d package the short convolution runs as its op on CUDA, which MMEngine does not count
    rows = ('  selective scan',) if causal_conv1d._causal_conv1d_cuda is not None else ('FLOPs', '  selective scan')
    for row in rows:
        assert _count(outputs['cuda'], row) == _count(outputs['cpu'], row), (row, outputs['cuda'])
    assert _count(outputs['cuda'], '  selective scan') == 2 * count_scan_flops(1, 64, 5, 4, 'zoh', bidirectional=True)


# ---------------------------------------------------------------------------------------------- the CLI tools
CLS_CONFIG = 'configs/cls/vim-tiny-p16_8xb128_in1k.py'
SEG_CONFIG = 'configs/seg/upernet_vim_bilinear_ade20k.py'
CLS_SHRINK = ['model.backbone.arch=test', 'model.head.in_channels=32']
SEG_SHRINK = ['model.backbone.arch=test', 'model.backbone.out_indices=(0,0,1,1)', 'model.neck.in_channels=32',
              'model.decode_head.in_channels=[32,32,32,32]', 'model.decode_head.channels=16']
COMMANDS = {
    'flops_cls': ['tools/analysis/get_flops.py', CLS_CONFIG, '--shape', '32', '--cfg-options', *CLS_SHRINK],
    'flops_seg': ['tools/analysis/get_flops.py', SEG_CONFIG, '--shape', '64', '64', '--per-module', '2',
                  '--cfg-options', *SEG_SHRINK],
    'bench_cls': ['tools/analysis/benchmark.py', CLS_CONFIG, '--shape', '32', '--batch-size', '2', '--iters', '2',
                  '--warmup', '1', '--device', 'cpu', '--cfg-options', *CLS_SHRINK],
}


@pytest.fixture(scope='module')
def cli_results():
    """All the tool runs at once (each is mostly import time)."""
    pytest.importorskip('mmpretrain')
    pytest.importorskip('mmseg')
    processes = {name: subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for name, args in COMMANDS.items()}
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        results[name] = (process.returncode, stdout, stderr)
    return results


def _ok(result):
    returncode, stdout, stderr = result
    assert returncode == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def _count(stdout, row):
    match = re.search(rf'^{row}\s+\S+ [GM]\s+\((\d+)', stdout, re.MULTILINE)
    assert match, stdout
    return int(match.group(1))


@pytest.mark.parametrize('name,method,tokens', [('flops_cls', 'zoh', 5), ('flops_seg', 'bilinear', 17)])
def test_get_flops_cli(cli_results, name, method, tokens):
    stdout = _ok(cli_results[name])
    assert 'building model...' in stdout and 'tracing' in stdout
    scan = _count(stdout, '  selective scan')
    # 2 blocks x 2 directions, d_inner 64, N 4; the 32 / 64 pixel input gives 2x2 / 4x4 patches of 16 + cls token
    assert scan == 2 * count_scan_flops(1, 64, tokens, 4, method, bidirectional=True)
    assert _count(stdout, 'FLOPs') == scan + _count(stdout, '  everything else')
    assert re.search(r'^params\s+0\.\d+ M', stdout, re.MULTILINE)
    if name == 'flops_seg':
        assert 'decode_head' in stdout and 'backbone.layers' in stdout  # the per-module table


def test_benchmark_cli(cli_results):
    stdout = _ok(cli_results['bench_cls'])
    assert 'building model...' in stdout and 'timing: iteration 2/2' in stdout
    match = re.search(r'^throughput\s+([\d.]+) img/s', stdout, re.MULTILINE)
    assert match and float(match.group(1)) > 0, stdout
    assert '2 x 3 x 32 x 32' in stdout and 'peak memory' not in stdout  # CUDA only


@pytest.mark.parametrize('tool', ['get_flops', 'benchmark'])
def test_tools_refuse_unknown_cfg_key(tool, capsys):
    """Checked before anything is built, so in-process."""
    spec = importlib.util.spec_from_file_location(f'_{tool}', osp.join(ROOT, 'tools', 'analysis', f'{tool}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit, match="no key 'model.backbone.archh'"):
        module.main([osp.join(ROOT, CLS_CONFIG), '--cfg-options', 'model.backbone.archh=test'])


@pytest.mark.parametrize('extra, message', [(['--device', 'cpu'], '--cuda-graph needs --device cuda'),
                                            (['--warmup', '0'], '--cuda-graph needs --warmup of at least 1')])
def test_benchmark_refuses_cuda_graph_without_its_needs(extra, message, capsys):
    spec = importlib.util.spec_from_file_location('_benchmark', osp.join(ROOT, 'tools', 'analysis', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit):
        module.parse_args([CLS_CONFIG, '--cuda-graph', *extra])
    assert message in capsys.readouterr().err
