"""CUDAGraphForward: eager wherever a graph cannot serve (CPU, autograd), replay equal to eager on CUDA."""
import warnings

import pytest
import torch
from torch import nn

from mmssm.engine import CUDAGraphForward
from mmssm.models import Vim


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return dict(out=self.linear(x), pair=(x.sum(-1), x.amax(-1)))


def test_cpu_and_autograd_run_eagerly():
    torch.manual_seed(0)
    wrapped = CUDAGraphForward(Counting())
    x = torch.randn(4, 6, requires_grad=True)
    out = wrapped(x)
    assert not wrapped.graphed(x) and wrapped.module.calls == 1 and not wrapped._graphs
    torch.testing.assert_close(out['out'], wrapped.module.linear(x))
    out['out'].sum().backward()  # the eager path keeps autograd
    assert x.grad is not None


@pytest.mark.parametrize('kwargs, match', [(dict(max_graphs=0), 'max_graphs'), (dict(warmup=0), 'warmup')])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CUDAGraphForward(nn.Identity(), **kwargs)


@pytest.mark.gpu
def test_replay_equals_eager_per_signature():
    torch.manual_seed(0)
    model = Counting().cuda().eval()
    wrapped = CUDAGraphForward(model, max_graphs=2, warmup=1)
    a, b = torch.randn(4, 6, device='cuda'), torch.randn(4, 6, device='cuda')
    with torch.inference_mode():
        out_a = wrapped(a)
        calls = model.calls  # warm-up and capture
        torch.testing.assert_close(out_a['out'], model.linear(a))
        out_b = wrapped(b)  # same signature: replayed into the same buffers, the module not called
        assert model.calls == calls and out_b['out'] is out_a['out']
        torch.testing.assert_close(out_b['out'], model.linear(b))
        torch.testing.assert_close(out_b['pair'][1], b.amax(-1))
        wide = torch.randn(2, 4, 6, device='cuda')  # second signature: its own graph
        torch.testing.assert_close(wrapped(wide)['out'], model.linear(wide))
        assert len(wrapped._graphs) == 2
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            third = torch.randn(3, 6, device='cuda')
            torch.testing.assert_close(wrapped(third)['out'], model.linear(third))
        assert len(wrapped._graphs) == 2 and 'max_graphs=2' in str(caught[0].message)
    with torch.no_grad():  # outside inference mode: not the inference-mode graph (its tensors are read-only here)
        wrapped.reset()
        torch.testing.assert_close(wrapped(a)['out'], model.linear(a))
        assert len(wrapped._graphs) == 1


@pytest.mark.gpu
def test_vim_replay_equals_eager():
    """A small Vim on the channels-last Triton path (scan, conv and add + norm kernels) replays what it computes
    eagerly."""
    torch.manual_seed(0)
    model = Vim('test', img_size=32, patch_size=8, out_type='featmap').cuda().eval()
    x = torch.randn(3, 3, 32, 32, device='cuda')
    with torch.inference_mode():
        reference = model(x)
        wrapped = CUDAGraphForward(model)
        first = [t.clone() for t in wrapped(x)]
        again = wrapped(x + 1)
        for out, ref in zip(first, reference):
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        for out, ref in zip(again, model(x + 1)):
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
