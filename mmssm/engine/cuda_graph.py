"""Inference replayed from CUDA graphs: a model's forward captured once per input signature and replayed after, so a
pass costs no Python or kernel-launch time on the host (a Vim pass launches about ten kernels a block).

    model = CUDAGraphForward(model.cuda().eval().half())
    with torch.inference_mode():
        out = model(images)          # first call per (shape, dtype, layout): warm-up, capture, replay
        out = model(other_images)    # same signature: copy in, replay

The outputs are the graph's own buffers, overwritten by the next replay of that signature: clone them to keep
them. Anything else runs the model eagerly: autograd on, tensors not on CUDA, more signatures than ``max_graphs``.
"""
import contextlib
import itertools
import warnings

import torch
from torch import nn


class CUDAGraphForward(nn.Module):
    """``module(x)`` replayed from one CUDA graph per input signature (shape, dtype, device, strides, and whether
    inference mode is on).

    Args:
        module: the model; its forward takes one tensor and returns a tensor or a (nested) tuple / list / dict of
            tensors. It must not synchronize with the host inside (no ``.item()``, no data-dependent shapes).
        max_graphs: signatures to capture at most (each holds its own input, output and memory pool); further
            ones run eagerly with a warning once.
        warmup: eager passes on a side stream before a capture (Triton and cuDNN pick and compile their kernels
            there, outside the capture).
    """

    def __init__(self, module: nn.Module, max_graphs: int = 4, warmup: int = 2):
        super().__init__()
        if max_graphs < 1:
            raise ValueError(f'CUDAGraphForward: max_graphs must be at least 1, got {max_graphs}.')
        if warmup < 1:
            raise ValueError(f'CUDAGraphForward: warmup must be at least 1 (a capture needs the kernels compiled '
                             f'and the memory allocated before it), got {warmup}.')
        self.module = module
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs = {}  # signature -> (graph, static input, static output)
        self._warned = False

    @staticmethod
    def signature(x: torch.Tensor) -> tuple:
        # (a graph captured under inference_mode holds inference tensors, which no_grad code may not write into)
        return tuple(x.shape), x.dtype, x.device, x.stride(), torch.is_inference_mode_enabled()

    def _replayable(self, x) -> bool:
        """A CUDA tensor and no gradient to compute (a graph replays a fixed inference pass)."""
        return isinstance(x, torch.Tensor) and x.is_cuda and not (torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.module.parameters())))

    def graphed(self, x: torch.Tensor) -> bool:
        """Whether ``self(x)`` replays (or would capture) a graph rather than running eagerly."""
        return self._replayable(x) and (self.signature(x) in self._graphs or len(self._graphs) < self.max_graphs)

    def forward(self, x: torch.Tensor):
        if not self._replayable(x):
            return self.module(x)
        key = self.signature(x)
        entry = self._graphs.get(key)
        if entry is None:
            if len(self._graphs) >= self.max_graphs:
                if not self._warned:
                    warnings.warn(f'CUDAGraphForward: more than max_graphs={self.max_graphs} input signatures; '
                                  f'{key[:2]} and later new ones run eagerly.', stacklevel=2)
                    self._warned = True
                return self.module(x)
            entry = self._graphs[key] = self._capture(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: torch.Tensor):
        static_in = x.detach().clone()
        stream = torch.cuda.Stream(device=x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self.module(static_in)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.module(static_in)
        return graph, static_in, static_out

    def reset(self):
        """Drop every captured graph (after changing the weights' storage, or to free their memory pools)."""
        self._graphs.clear()
        self._warned = False


class CUDAGraphTrainStep:
    """A whole training step (zero_grad, forward, backward, optimizer step) captured in a CUDA graph and replayed,
    so a step costs no Python, autograd-engine or launch time on the host (an eager Vim-T step is host-bound).

        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True, capturable=True)

        def step(images, labels):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast('cuda', torch.bfloat16, cache_enabled=False):
                loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            return loss

        graphed = CUDAGraphTrainStep(model, optimizer, step)
        for images, labels in loader:
            loss = graphed(images.cuda(), labels.cuda())   # the graph's buffer: .item() or clone() to keep it

    The first call per input signature runs ``warmup`` eager steps on a side stream (kernels compiled, optimizer
    state allocated), restores the weights, buffers, optimizer state and RNG states as they were (new optimizer
    state entries are zeroed, the fresh state of Adam / AdamW / SGD), captures, and replays: the model sees that
    batch once, as in eager training. Later calls copy the inputs in and replay.

    What a graph bakes in must not change between steps. A float ``lr`` of a capturable or fused optimizer (set
    by a scheduler as usual) is followed: the graph reads it from a device tensor that each call updates. The
    other hyperparameters of the groups are checked on every call, and a change raises (call :meth:`reset` to
    capture again). A weight, buffer or optimizer state tensor replaced rather than updated in place (``p.data =
    ...``, an optimizer state loaded from a file) makes the next call capture again, with a warning. Host-side
    randomness inside ``step_fn`` (numpy / Python ``random``, e.g. a mixup ratio) is frozen at capture, so keep
    it outside; torch's CUDA RNG (dropout, drop path) advances per replay. fp16 with a ``GradScaler``
    synchronizes with the host and cannot be captured: use bf16.

    Args:
        model: the trained module (its state is restored after the warm-up).
        optimizer: built with ``capturable=True`` where it has the option (Adam, AdamW, ...).
        step_fn: ``step_fn(*inputs)`` runs one step and returns a tensor or a (nested) tuple / list / dict of
            tensors. No host synchronization inside (no ``.item()``, no data-dependent shapes or branches).
        warmup: eager steps before a capture.
        max_graphs: input signatures to capture at most (each holds its own memory pool); steps of further
            ones run eagerly with a warning once. Inputs that are not all CUDA tensors run eagerly.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, step_fn, warmup: int = 3,
                 max_graphs: int = 2):
        if warmup < 1:
            raise ValueError(f'CUDAGraphTrainStep: warmup must be at least 1 (the optimizer state and the '
                             f'kernels must exist before a capture), got {warmup}.')
        if max_graphs < 1:
            raise ValueError(f'CUDAGraphTrainStep: max_graphs must be at least 1, got {max_graphs}.')
        self.model, self.optimizer, self.step_fn = model, optimizer, step_fn
        self.warmup, self.max_graphs = warmup, max_graphs
        self._graphs = {}  # signature -> (graph, static inputs, static output)
        self._hyper, self._ptrs = None, None
        self._lr = {}  # param group index -> [device tensor the graphs read, the float it holds]
        self._warned = False

    @staticmethod
    def signature(inputs) -> tuple:
        return tuple((tuple(x.shape), x.dtype, x.device, x.stride()) for x in inputs)

    def _hyperparameters(self):
        """The optimizer's settings per group that a capture bakes in: its defaults' keys (not a scheduler's
        ``initial_lr``), less tensors (the graph reads them) and the lr the graphs follow."""
        return [{k: v for k, v in group.items() if k in self.optimizer.defaults and not isinstance(v, torch.Tensor)
                 and not (k == 'lr' and i in self._lr)} for i, group in enumerate(self.optimizer.param_groups)]

    def _tensor_lr(self, device):
        """Give each capturable / fused group with a float lr a device tensor for it (read by the graphs)."""
        for i, group in enumerate(self.optimizer.param_groups):
            if i not in self._lr and isinstance(group.get('lr'), float) and (group.get('capturable')
                                                                             or group.get('fused')):
                self._lr[i] = [torch.tensor(group['lr'], dtype=torch.float32, device=device), group['lr']]

    def _sync_lr(self):
        """The groups' float lr (a scheduler's) into the tensors the graphs read."""
        for i, entry in self._lr.items():
            lr = self.optimizer.param_groups[i]['lr']
            if isinstance(lr, torch.Tensor):
                raise RuntimeError(f'CUDAGraphTrainStep: param group {i} got a tensor lr after the capture; the '
                                   f'graph reads its own, so set a float (it is followed) or call reset().')
            if lr != entry[1]:
                entry[0].fill_(lr)
                entry[1] = lr

    def _check_capturable(self):
        for i, group in enumerate(self.optimizer.param_groups):
            if group.get('capturable') is False:
                raise ValueError(
                    f'CUDAGraphTrainStep: param group {i} of {type(self.optimizer).__name__} has capturable=False, '
                    f'so its step cannot be replayed from a graph; build it with capturable=True, e.g. '
                    f'torch.optim.AdamW(params, lr=..., fused=True, capturable=True).')

    def _check_hyperparameters(self):
        now = self._hyperparameters()
        for i, (then, group) in enumerate(zip(self._hyper, now)):
            for key in then.keys() | group.keys():
                if then.get(key) != group.get(key):
                    raise RuntimeError(
                        f'CUDAGraphTrainStep: param group {i} changed {key!r} from {then.get(key)!r} to '
                        f'{group.get(key)!r} after the step was captured, and the graph replays the captured '
                        f'value. Pass it as a CUDA tensor updated in place (lr=torch.tensor(..., device="cuda") '
                        f'with capturable=True), or call reset() to capture again.')
        if len(now) != len(self._hyper):
            raise RuntimeError(f'CUDAGraphTrainStep: the optimizer has {len(now)} param groups, '
                               f'{len(self._hyper)} when captured; call reset() to capture again.')

    def _key(self, inputs):
        """The graph key of ``inputs`` (None: not all CUDA tensors) and whether a graph serves it."""
        if not inputs or not all(isinstance(x, torch.Tensor) and x.is_cuda for x in inputs):
            return None, False
        key = self.signature(inputs)
        return key, key in self._graphs or len(self._graphs) < self.max_graphs

    def graphed(self, *inputs) -> bool:
        """Whether ``self(*inputs)`` replays (or would capture) a graph rather than stepping eagerly."""
        return self._key(inputs)[1]

    def __call__(self, *inputs):
        key, graphed = self._key(inputs)
        if not graphed:
            if key is not None and not self._warned:
                warnings.warn(f'CUDAGraphTrainStep: more than max_graphs={self.max_graphs} input signatures; '
                              f'{key} and later new ones step eagerly.', stacklevel=2)
                self._warned = True
            return self.step_fn(*inputs)
        if self._hyper is not None:
            if self._storages() != self._ptrs:  # a graph would read the old memory: capture again
                warnings.warn('CUDAGraphTrainStep: a weight, buffer or optimizer state tensor was replaced (not '
                              'updated in place) since the capture; capturing the step again.', stacklevel=2)
                self.reset()
            else:
                self._check_hyperparameters()
                self._sync_lr()
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._graphs[key] = self._capture(inputs)
        graph, static_inputs, static_out = entry
        for static, x in zip(static_inputs, inputs):
            static.copy_(x)
        graph.replay()
        return static_out

    def _storages(self) -> list:
        """Where the weights, buffers and optimizer state live (what the graphs read and write)."""
        ptrs = [t.data_ptr() for t in itertools.chain(self.model.parameters(), self.model.buffers())]
        ptrs += [v.data_ptr() for state in self.optimizer.state.values() for v in state.values()
                 if isinstance(v, torch.Tensor)]
        return ptrs

    def _state(self):
        """Every tensor the warm-up may change: weights, buffers, optimizer state (by parameter and key)."""
        tensors = {k: v for k, v in self.model.state_dict(keep_vars=True).items() if isinstance(v, torch.Tensor)}
        for p, state in self.optimizer.state.items():
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    tensors[(id(p), k)] = v
        return tensors

    def _warm_up(self, inputs):
        """``warmup`` eager steps on ``inputs``, then everything as before them (new optimizer state zeroed)."""
        saved = {k: v.detach().clone() for k, v in self._state().items()}
        saved_steps = {id(p): {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
                       for p, state in self.optimizer.state.items()}
        cpu_rng = torch.get_rng_state()
        cuda = all(x.is_cuda for x in inputs)
        device = inputs[0].device
        cuda_rng = torch.cuda.get_rng_state(device) if cuda else None
        stream = torch.cuda.Stream(device=device) if cuda else None
        if cuda:
            stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
            for _ in range(self.warmup):
                self.step_fn(*inputs)
        if cuda:
            torch.cuda.current_stream(device).wait_stream(stream)
        with torch.no_grad():
            for k, v in self._state().items():
                if k in saved:
                    v.copy_(saved[k])
                else:
                    v.zero_()
        for p, state in self.optimizer.state.items():  # non-tensor entries (a float step count) as they were
            for k, v in list(state.items()):
                if not isinstance(v, torch.Tensor):
                    old = saved_steps.get(id(p), {})
                    state[k] = old[k] if k in old else type(v)(0)
        torch.set_rng_state(cpu_rng)
        if cuda:
            torch.cuda.set_rng_state(cuda_rng, device)

    def _capture(self, inputs):
        self._check_capturable()
        self._tensor_lr(inputs[0].device)
        static_inputs = tuple(x.detach().clone() for x in inputs)
        groups = self.optimizer.param_groups
        for i, (tensor, value) in self._lr.items():  # the graph's lr tensor in place of the float while it runs
            tensor.fill_(value)
            groups[i]['lr'] = tensor
        try:
            self._warm_up(static_inputs)
            graph, failure = torch.cuda.CUDAGraph(), None
            try:
                with torch.cuda.graph(graph):
                    try:
                        static_out = self.step_fn(*static_inputs)
                    except Exception as error:  # the step's own error, not the broken capture's that follows
                        failure = error
            except Exception as error:
                failure = failure or error
            if failure is not None:
                raise RuntimeError(
                    f'CUDAGraphTrainStep: the step could not be captured in a CUDA graph ({failure!r}). A captured '
                    f'step must not synchronize with the host: no .item(), no data-dependent shapes, no checks of '
                    f'tensor values (mmpretrain\'s LabelSmoothLoss checks integer labels with .item(): give it '
                    f'mixed labels (Mixup / CutMix) or use CrossEntropyLoss). Nothing was trained by the failed '
                    f'capture.') from failure
        finally:
            for i, (_, value) in self._lr.items():
                groups[i]['lr'] = value
        self._hyper, self._ptrs = self._hyperparameters(), self._storages()
        return graph, static_inputs, static_out

    def reset(self):
        """Drop every captured graph (after changing a baked-in hyperparameter, or the weights' storage)."""
        self._graphs.clear()
        self._hyper, self._ptrs = None, None
        self._lr = {}
        self._warned = False
