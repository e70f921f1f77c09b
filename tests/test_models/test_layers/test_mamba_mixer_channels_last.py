"""MambaMixer's and MambaVisionMixer's channels-last path (no layout copies; Triton) equals the transposing path:
through Triton's CPU interpreter here, compiled on a GPU (channels_last_checks.py holds the checks)."""
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'test_ops', 'test_selective_scan'))
from test_compiled_op_cpu import needs_interpreter  # noqa: E402


def _run(device, interpret, part):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if interpret:
        env['TRITON_INTERPRET'] = '1'
    result = subprocess.run([sys.executable, os.path.join(HERE, 'channels_last_checks.py'), device, part], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert result.stdout.count('ok ') == dict(fast=9, slow=3, all=12)[part], result.stdout


@needs_interpreter
def test_channels_last_mixer_through_the_triton_interpreter():
    _run('cpu', interpret=True, part='fast')


@pytest.mark.slow
@needs_interpreter
def test_channels_last_recompute_compile_and_bilinear_through_the_triton_interpreter():
    """The slowest checks through the interpreter (about 2 minutes): scan_recompute, torch.compile of the mixer,
    the bilinear mixer."""
    _run('cpu', interpret=True, part='slow')


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (the compiled Triton kernels)')
def test_channels_last_mixer_compiled():
    _run('cuda', interpret=False, part='all')


def test_channels_last_path_is_not_taken_without_triton_backend():
    """On the CPU (no interpreter) and for the torch backend the mixer keeps the transposing path."""
    from mmssm.models.layers.mamba_mixer import MambaMixer
    x = torch.randn(1, 5, 8)
    assert not MambaMixer(8, scan_backend='auto')._channels_last_path(x)
    assert not MambaMixer(8, scan_backend='torch')._channels_last_path(x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (CUDA graphs)')
def test_vim_channels_last_forward_replays_in_a_cuda_graph():
    """The channels-last Vim forward (conv, scan and add + norm kernels) is captured in a CUDA graph once and
    replayed on new input: equal to the eager forward (nothing on the hot path needs the host); after an in-place
    change of the weights too (out_proj's merged weight is formed inside the graph, not taken from the eager
    cache)."""
    from mmssm.models import Vim
    torch.manual_seed(0)
    model = Vim('test', img_size=32, patch_size=8, mixer_cfg=dict(scan_backend='triton')).cuda().eval()
    static_in = torch.randn(2, 3, 32, 32, device='cuda')
    with torch.no_grad():
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            model(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(static_in)
        new = torch.randn(2, 3, 32, 32, device='cuda')
        static_in.copy_(new)
        graph.replay()
        eager = model(new)
    assert model.layers[0].mixer._channels_last_path(torch.empty(1, 1, 1, device='cuda'))
    for a, b in zip(static_out, eager):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        for layer in model.layers:
            layer.mixer.out_proj.weight.mul_(-2.0)
        graph.replay()
        eager = model(new)
    for a, b in zip(static_out, eager):
        torch.testing.assert_close(a, b)


def test_auto_policy_of_the_channels_last_path(monkeypatch):
    """'auto' with the CUDA extension built: channels-last for inference at any length, and with gradients only
    where the strided zoh backward takes the scan (else the transposing path); 'triton' (argument or
    MMSSM_SCAN_BACKEND) always; never float64 or 'torch'; without the extension, 'auto' is Triton and
    channels-last."""
    from mmssm.models.layers import mamba_mixer as mm
    from mmssm.ops.selective_scan import cuda_scan
    monkeypatch.setattr(mm, 'channels_last_available', lambda x: True)
    monkeypatch.setattr(mm, 'available_backends', lambda device: ['cuda', 'triton', 'torch'])
    monkeypatch.delenv('MMSSM_SCAN_BACKEND', raising=False)
    short, long = torch.randn(2, 197, 8), torch.randn(2, 6085, 8)
    assert mm.channels_last_path('auto', short) and mm.channels_last_path('auto', long)
    assert not mm.channels_last_path('auto', long.clone().requires_grad_())
    assert not mm.channels_last_path('auto', short.clone().requires_grad_())
    with torch.no_grad():
        assert mm.channels_last_path('auto', short.clone().requires_grad_())
    assert mm.channels_last_path('triton', long.clone().requires_grad_())
    assert not mm.channels_last_path('torch', short) and not mm.channels_last_path('cuda', short)
    assert not mm.channels_last_path('triton', short.double())
    monkeypatch.setenv('MMSSM_SCAN_BACKEND', 'triton')
    assert mm.channels_last_path('auto', long)
    monkeypatch.setenv('MMSSM_SCAN_BACKEND', 'cuda')
    assert not mm.channels_last_path('auto', short)
    monkeypatch.delenv('MMSSM_SCAN_BACKEND')
    monkeypatch.setattr(mm, 'available_backends', lambda device: ['triton', 'torch'])
    assert mm.channels_last_path('auto', long.clone().requires_grad_())

    # training where the strided CUDA zoh backward takes the scan (the mixer's method and sizes qualify)
    monkeypatch.setattr(mm, 'available_backends', lambda device: ['cuda', 'triton', 'torch'])
    grad = short.clone().requires_grad_()
    built = type('Extension', (), dict(zoh_bwd_strided=None))()
    monkeypatch.setattr(mm.triton_scan, 'BWD_CUDA_ZOH', True)
    monkeypatch.setattr(cuda_scan, 'extension', lambda: built)
    assert mm.channels_last_path('auto', grad, strided_backward=True)
    assert not mm.channels_last_path('auto', grad, strided_backward=False)
    monkeypatch.setattr(cuda_scan, 'extension', lambda: object())  # an extension built without the kernel
    assert not mm.channels_last_path('auto', grad, strided_backward=True)
    monkeypatch.setattr(cuda_scan, 'extension', lambda: built)
    monkeypatch.setattr(mm.triton_scan, 'BWD_CUDA_ZOH', False)  # MMSSM_TRITON_CUDA_ZOH=0
    assert not mm.channels_last_path('auto', grad, strided_backward=True)
    monkeypatch.setattr(mm.triton_scan, 'BWD_CUDA_ZOH', True)
    monkeypatch.setattr(mm, 'channels_last_available', lambda x: x.dtype != torch.float64)

    def path(**cfg):
        return mm.MambaMixer(64, **cfg)._channels_last_path(grad)

    assert path() and path(d_state=12)  # Vim's zoh with N 16 or 12, 128 inner channels
    assert not path(discretization='bilinear') and not path(d_state=8) and not path(d_state=24)
    assert not mm.MambaMixer(40)._channels_last_path(grad)  # 80 inner channels: not a multiple of 32
