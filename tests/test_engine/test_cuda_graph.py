"""CUDAGraphForward: eager wherever a graph cannot serve (CPU, autograd), replay equal to eager on CUDA.
CUDAGraphTrainStep: its warm-up undone, its checks (hyperparameters, replaced storage), and on CUDA a Vim trained
from a graph as eagerly."""
import copy
import warnings

import pytest
import torch
from torch import nn

from mmssm.engine import CUDAGraphForward, CUDAGraphTrainStep
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


def _net():
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.GELU(), nn.Linear(8, 3))


def _stepper(model, optimizer):
    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return step


@pytest.mark.parametrize('make_optimizer', [
    lambda params: torch.optim.AdamW(params, lr=1e-2),
    lambda params: torch.optim.SGD(params, lr=1e-1, momentum=0.9)])
def test_warm_up_leaves_training_as_if_it_had_not_run(make_optimizer):
    """The warm-up's steps are undone: weights, BatchNorm buffers, optimizer state and the RNG (dropout) as before,
    so the steps after it equal those of a run without it, bit for bit."""
    torch.manual_seed(0)
    model = _net()
    twin = _net()
    twin.load_state_dict(model.state_dict())
    data = [(torch.randn(5, 6), torch.randint(0, 3, (5,))) for _ in range(3)]
    optimizer, twin_optimizer = make_optimizer(model.parameters()), make_optimizer(twin.parameters())
    for net, opt in ((twin, twin_optimizer), (model, optimizer)):  # both with optimizer state before the warm-up
        torch.manual_seed(2)
        _stepper(net, opt)(*data[0])
    graphed = CUDAGraphTrainStep(model, optimizer, _stepper(model, optimizer), warmup=2)
    torch.manual_seed(1)
    graphed._warm_up(data[1])
    losses = [graphed(*batch) for batch in data]  # CPU tensors: eager steps
    torch.manual_seed(1)
    twin_losses = [_stepper(twin, twin_optimizer)(*batch) for batch in data]
    assert not graphed._graphs and not graphed.graphed(*data[0])
    torch.testing.assert_close(torch.stack(losses), torch.stack(twin_losses), rtol=0, atol=0)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_warm_up_zeroes_new_optimizer_state():
    model = _net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graphed = CUDAGraphTrainStep(model, optimizer, _stepper(model, optimizer), warmup=3)
    graphed._warm_up((torch.randn(5, 6), torch.randint(0, 3, (5,))))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    states = list(optimizer.state.values())
    assert len(states) == len(list(model.parameters()))
    assert all(not v.any() for state in states for v in state.values())


def test_replaced_storage_is_seen():
    """What makes a graph recapture: a weight or optimizer state replaced, not updated in place."""
    model = _net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _stepper(model, optimizer)(torch.randn(5, 6), torch.randint(0, 3, (5,)))
    graphed = CUDAGraphTrainStep(model, optimizer, _stepper(model, optimizer))
    before = graphed._storages()
    with torch.no_grad():
        model[0].weight.mul_(0.5)  # in place: what a graph replays into
        model[1].running_mean.zero_()
    assert graphed._storages() == before
    model[0].weight.data = model[0].weight.data.clone()
    assert graphed._storages() != before
    before = graphed._storages()
    optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # new state tensors, as from a checkpoint
    assert graphed._storages() != before


def test_train_step_bad_input_names_the_fix():
    model = _net()
    with pytest.raises(ValueError, match='warmup'):
        CUDAGraphTrainStep(model, torch.optim.SGD(model.parameters(), lr=1), lambda: None, warmup=0)
    with pytest.raises(ValueError, match='max_graphs'):
        CUDAGraphTrainStep(model, torch.optim.SGD(model.parameters(), lr=1), lambda: None, max_graphs=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    graphed = CUDAGraphTrainStep(model, optimizer, _stepper(model, optimizer))
    with pytest.raises(ValueError, match='capturable=True'):
        graphed._check_capturable()
    graphed._hyper = graphed._hyperparameters()
    optimizer.param_groups[0]['initial_lr'] = 1e-3  # a scheduler's own key: not the optimizer's
    graphed._check_hyperparameters()
    optimizer.param_groups[0]['lr'] = 5e-4  # not capturable or fused: no lr tensor to follow it
    with pytest.raises(RuntimeError, match="'lr' from 0.001 to 0.0005.*reset"):
        graphed._check_hyperparameters()


@pytest.mark.gpu
@pytest.mark.parametrize('autocast', [False, True])
def test_vim_graphed_training_equals_eager(autocast):
    """A small Vim classifier (channels-last Triton path) trained four steps from a graph and eagerly: same
    losses and weights, also after a float lr change (followed); a weight-decay change raises."""
    torch.manual_seed(0)

    def build():
        torch.manual_seed(0)
        backbone = Vim('test', img_size=32, patch_size=8, drop_path_rate=0.0)
        return nn.Sequential(backbone, Head(backbone.embed_dims)).cuda().train()

    class Head(nn.Module):
        def __init__(self, dims):
            super().__init__()
            self.fc = nn.Linear(dims, 10)

        def forward(self, outs):
            return self.fc(outs[-1])

    def stepper(model, optimizer):
        def step(x, y):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast('cuda', torch.bfloat16, enabled=autocast, cache_enabled=False):
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss
        return step

    data = [(torch.randn(6, 3, 32, 32, device='cuda'), torch.randint(0, 10, (6,), device='cuda')) for _ in range(4)]
    eager, graphed_model = build(), build()
    # eps=1: each update about lr * gradient, so the summation order of atomics cannot flip an update's sign
    # (as it can near a zero gradient at eps=1e-8), and a missed lr change moves the weights by about 1e-2
    opt_eager = torch.optim.AdamW(eager.parameters(), lr=0.05, eps=1.0, fused=True)
    opt_graph = torch.optim.AdamW(graphed_model.parameters(), lr=0.05, eps=1.0, fused=True, capturable=True)
    graphed = CUDAGraphTrainStep(graphed_model, opt_graph, stepper(graphed_model, opt_graph))
    eager_step = stepper(eager, opt_eager)
    for i, batch in enumerate(data):
        if i == 2:  # what a scheduler does: the graph follows it
            opt_eager.param_groups[0]['lr'] = 0.5
            opt_graph.param_groups[0]['lr'] = 0.5
        ref = eager_step(*batch).item()
        assert graphed.graphed(*batch)
        got = graphed(*batch).item()
        assert abs(got - ref) <= 1e-5 * abs(ref) + (1e-3 if autocast else 1e-6), (i, got, ref)
    assert len(graphed._graphs) == 1
    tol = dict(rtol=1e-2, atol=1e-3) if autocast else dict(rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(graphed_model.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name, **tol)
    opt_graph.param_groups[0]['weight_decay'] = 0.5
    with pytest.raises(RuntimeError, match='weight_decay'):
        graphed(*data[0])
