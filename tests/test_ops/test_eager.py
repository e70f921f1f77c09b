"""When the channels-last ops skip their custom-op wrappers (inference) and when they must keep them."""
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmssm.ops.eager import direct_call


class Watching(TorchDispatchMode):

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_direct_call_only_without_gradient_compile_trace_or_dispatch_mode():
    x, w = torch.randn(3), torch.randn(3, requires_grad=True)
    assert direct_call([x])
    assert not direct_call([x, w])  # autograd needs the op's backward
    with torch.no_grad():
        assert direct_call([x, w])
    with torch.inference_mode():
        assert direct_call([x])
    with torch.no_grad(), Watching():  # FLOP counters and op recorders must see the op
        assert not direct_call([x])
    seen = []
    torch.jit.trace(lambda t: seen.append(direct_call([t])) or t * 2, (x,), check_trace=False)
    assert seen == [False]


def test_direct_call_reads_the_tensors_only_with_autograd_on():
    """A mixer passes its parameters lazily: inference must not walk them (host time on every call)."""
    x, w = torch.randn(3), torch.randn(3, requires_grad=True)
    read = []

    def tensors():
        for t in (x, w):
            read.append(t)
            yield t

    with torch.no_grad():
        assert direct_call(tensors())
    assert read == []
    assert not direct_call(tensors())
    assert len(read) == 2


def test_host_helpers_equal_tritons():
    import pytest
    triton = pytest.importorskip('triton')
    from mmssm.ops.eager import cdiv, next_power_of_2
    for n in range(1, 300):
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        for d in (1, 16, 64, 255):
            assert cdiv(n, d) == triton.cdiv(n, d), (n, d)
