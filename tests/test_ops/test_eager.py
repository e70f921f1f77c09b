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


def test_split_channels_gradient_equals_autograds_split():
    """Each part's gradient summed over its copies, unused copies and parts included, written into one buffer;
    in inference and under a dispatch mode the plain views."""
    from mmssm.ops.eager import split_channels
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, requires_grad=True)
    sizes = (3, 4)
    for copies in (1, 2, 3):
        parts = split_channels(x, sizes, copies)
        plain = [p for p in x.split(sizes, dim=-1) for _ in range(copies)]
        assert len(parts) == len(plain) == 2 * copies
        assert type(parts[0].grad_fn).__name__ == '_PartsBackward'
        for a, b in zip(parts, plain):
            assert torch.equal(a, b) and a.data_ptr() == b.data_ptr()  # views, no copy
        weights = [torch.randn(p.shape) for p in parts]
        for unused in (None, 0, copies):  # a copy of the first part, or the whole second part, unused
            used = [i for i in range(len(parts)) if unused is None or not (
                i == unused if unused == 0 else i >= copies)]
            loss = sum((parts[i] * weights[i]).sum() for i in used)
            loss_ref = sum((plain[i] * weights[i]).sum() for i in used)
            grad, = torch.autograd.grad(loss, x, retain_graph=True)
            grad_ref, = torch.autograd.grad(loss_ref, x, retain_graph=True)
            torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        assert split_channels(x, sizes, 2)[0].grad_fn is None
    with Watching():
        assert type(split_channels(x, sizes)[0].grad_fn).__name__ != '_PartsBackward'


def test_unbind_parts_gradient_equals_autograds_unbind():
    from mmssm.ops.eager import unbind_parts
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, requires_grad=True)
    parts = unbind_parts(x, 2)
    assert len(parts) == 4 and type(parts[0].grad_fn).__name__ == '_PartsBackward'
    plain = [p for p in x.unbind(0) for _ in range(2)]
    weights = [torch.randn(3, 4) for _ in parts]
    for used in ([0, 1, 2, 3], [0, 3], [1]):  # the second part's gradient zero in the last case
        grad, = torch.autograd.grad(sum((parts[i] * weights[i]).sum() for i in used), x, retain_graph=True)
        grad_ref, = torch.autograd.grad(sum((plain[i] * weights[i]).sum() for i in used), x, retain_graph=True)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)
