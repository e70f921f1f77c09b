"""Inference replayed from CUDA graphs: a model's forward captured once per input signature and replayed after, so a
pass costs no Python or kernel-launch time on the host (a Vim pass launches about ten kernels a block).

    model = CUDAGraphForward(model.cuda().eval().half())
    with torch.inference_mode():
        out = model(images)          # first call per (shape, dtype, layout): warm-up, capture, replay
        out = model(other_images)    # same signature: copy in, replay

The outputs are the graph's own buffers, overwritten by the next replay of that signature: clone them to keep
them. Anything else runs the model eagerly: autograd on, tensors not on CUDA, more signatures than ``max_graphs``.
"""
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
