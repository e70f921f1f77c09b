"""MMEngine training iterations replayed from CUDA graphs (``tools/train.py --cuda-graph``).

An eager Vim training step is host-bound (Python, the autograd engine, kernel launches). This hook replaces the
model's ``train_step`` for the run: the data preprocessor (normalization, Mixup / CutMix with their host-side
random ratios) still runs eagerly each iteration; the forward, loss, backward and optimizer step run from a CUDA
graph captured once per batch signature (:class:`~mmssm.engine.CUDAGraphTrainStep`). Each iteration copies the
preprocessed tensors (images and every tensor of the data samples: labels, mixed scores, ...) into the graph's
inputs and replays it. Schedulers' lr values are followed; hooks (EMA, logging, checkpoints) run as usual.

What a graph cannot do is refused at the start with the fix: distributed runs, ``AmpOptimWrapper`` (its
GradScaler syncs with the host; bf16 autocast needs no scaler: ``autocast='bfloat16'``, which ``--amp`` selects
with ``--cuda-graph``), gradient accumulation, an lr schedule on an optimizer without ``capturable`` (mmpretrain's
Lamb, SGD) and schedules of other hyperparameters (momentum). ``clip_grad`` works: the norm is logged from the
graph's output (MMEngine's own logging of it would sync).
"""
import contextlib

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.structures import BaseDataElement

from mmssm.registry import HOOKS

from ..cuda_graph import CUDAGraphTrainStep


def tensor_slots(data) -> list:
    """Every tensor of a preprocessed batch (dicts, lists, data samples and their nested elements), in a fixed
    order, as (container, key, tensor): what changes from one batch to the next."""
    slots = []

    def walk(obj):
        if isinstance(obj, BaseDataElement):
            items = [(k, obj.get(k)) for k in sorted(obj.keys())]
        elif isinstance(obj, dict):
            items = [(k, obj[k]) for k in sorted(obj, key=str)]
        elif isinstance(obj, list):
            items = list(enumerate(obj))
        else:
            return
        for key, value in items:
            if isinstance(value, torch.Tensor):
                slots.append((obj, key, value))
            else:
                walk(value)

    walk(data)
    return slots


def fill_slots(slots, tensors) -> None:
    """Put ``tensors`` where :func:`tensor_slots` found the batch's own."""
    for (obj, key, _), tensor in zip(slots, tensors):
        if isinstance(obj, BaseDataElement):
            setattr(obj, key, tensor)
        else:
            obj[key] = tensor


def make_capturable(optimizer) -> bool:
    """Turn on ``capturable`` for an optimizer that has the option (Adam, AdamW, ...), moving a loaded state's
    step counts to the parameters' device as capturable steps need. Returns whether anything changed."""
    if 'capturable' not in optimizer.defaults or all(g.get('capturable') for g in optimizer.param_groups):
        return False
    optimizer.defaults['capturable'] = True
    for group in optimizer.param_groups:
        group['capturable'] = True
        for p in group['params']:
            step = optimizer.state.get(p, {}).get('step')
            if isinstance(step, torch.Tensor) and step.device != p.device:
                optimizer.state[p]['step'] = step.to(device=p.device, dtype=torch.float32)
    return True


@HOOKS.register_module()
class CUDAGraphTrainHook(Hook):
    """Train from CUDA graphs: the model's ``train_step`` after the data preprocessor, captured per batch signature.

    Args:
        autocast (str, optional): ``'bfloat16'`` runs the forward under CUDA autocast in bf16 (the graph-safe
            mixed precision: no loss scaler). Default: None (the optimizer wrapper's precision, fp32).
        warmup (int): eager steps before a capture (undone; see :class:`~mmssm.engine.CUDAGraphTrainStep`).
        max_graphs (int): batch signatures with a graph of their own (a smaller last batch takes the second);
            iterations of further ones run eagerly.
    """

    priority = 'VERY_LOW'

    def __init__(self, autocast: str | None = None, warmup: int = 3, max_graphs: int = 2):
        if autocast not in (None, 'bfloat16'):
            raise ValueError(f"CUDAGraphTrainHook: autocast must be None or 'bfloat16', got {autocast!r} (float16 "
                             f"needs a loss scaler, whose overflow check syncs with the host).")
        self.autocast, self.warmup, self.max_graphs = autocast, warmup, max_graphs
        self._step = None

    def before_train(self, runner) -> None:
        model, optim_wrapper = runner.model, runner.optim_wrapper
        if is_model_wrapper(model):
            raise RuntimeError(f'CUDAGraphTrainHook: the model is wrapped by {type(model).__name__} (a distributed '
                               f'run); CUDA-graph training is single-process: run tools/train.py without a launcher '
                               f'or drop --cuda-graph.')
        if type(optim_wrapper) is not OptimWrapper:
            raise ValueError(f'CUDAGraphTrainHook: the optimizer wrapper is {type(optim_wrapper).__name__}; a graph '
                             f'needs the plain OptimWrapper (AmpOptimWrapper\'s loss scaler syncs with the host). '
                             f'For mixed precision use CUDAGraphTrainHook(autocast=\'bfloat16\') '
                             f'(tools/train.py --amp --cuda-graph does).')
        if optim_wrapper._accumulative_counts != 1:
            raise ValueError(f'CUDAGraphTrainHook: accumulative_counts={optim_wrapper._accumulative_counts}; a graph '
                             f'replays whole steps: set optim_wrapper.accumulative_counts=1 or drop --cuda-graph.')
        self._check_schedulers(runner.param_schedulers, optim_wrapper.optimizer)
        device = next(model.parameters()).device
        if device.type != 'cuda':
            raise RuntimeError(f'CUDAGraphTrainHook: the model is on {device}; CUDA graphs need a CUDA GPU '
                               f'(drop --cuda-graph on a CPU).')
        if make_capturable(optim_wrapper.optimizer):
            runner.logger.info(f'CUDAGraphTrainHook: {type(optim_wrapper.optimizer).__name__} set to capturable=True')
        self._step = CUDAGraphTrainStep(model, optim_wrapper.optimizer, self._run, warmup=self.warmup,
                                        max_graphs=self.max_graphs)
        self._model, self._optim_wrapper, self._slots = model, optim_wrapper, None
        model.train_step = self._train_step  # an instance attribute: the class's method returns in after_train
        runner.logger.info(f'CUDAGraphTrainHook: training steps replayed from CUDA graphs '
                           f'(autocast {self.autocast or "off"}); the first iteration of each batch shape captures')

    @staticmethod
    def _check_schedulers(schedulers, optimizer) -> None:
        """Refuse, before any step, a schedule the graph could not follow: an lr schedule on an optimizer without
        the ``capturable`` option (its lr cannot be a device tensor), or any other scheduled hyperparameter."""
        if isinstance(schedulers, dict):
            schedulers = [s for group in schedulers.values() for s in group]
        for scheduler in schedulers or []:
            name = getattr(scheduler, 'param_name', None)
            if name is None or (name == 'lr' and 'capturable' in optimizer.defaults):
                continue
            why = (f'{type(optimizer).__name__} has no capturable option, so a graph cannot follow its lr'
                   if name == 'lr' else f'a graph bakes {name!r} in')
            raise ValueError(f'CUDAGraphTrainHook: {type(scheduler).__name__} schedules {name!r}, and {why}. '
                             f'Train without --cuda-graph, or with an optimizer that has capturable=True (Adam, '
                             f'AdamW) and only lr scheduled.')

    def after_train(self, runner) -> None:
        if self._step is not None:
            self._model.__dict__.pop('train_step', None)
            self._step.reset()
            self._step = None

    def _train_step(self, data, optim_wrapper):
        model = self._model
        with optim_wrapper.optim_context(model):
            data = model.data_preprocessor(data, True)
        slots = tensor_slots(data)
        device = next(model.parameters()).device
        moved = [t if t.device == device else t.to(device, non_blocking=True) for _, _, t in slots]
        fill_slots(slots, moved)  # (a label left on the CPU by a preprocessor would make every step eager)
        self._data, self._slots = data, [(obj, key, t) for (obj, key, _), t in zip(slots, moved)]
        count = optim_wrapper._inner_count
        log_vars = self._step(*(tensor for _, _, tensor in self._slots))
        optim_wrapper._inner_count = count + 1  # one step, whatever the warm-up and the capture counted
        return log_vars

    def _run(self, *tensors):
        """One step (forward, loss, backward, optimizer step) on the current batch with ``tensors`` in place of its
        own (the graph's inputs while capturing) -> the log variables."""
        model, optim_wrapper = self._model, self._optim_wrapper
        fill_slots(self._slots, tensors)
        precision = torch.autocast('cuda', dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with precision:
            losses = model._run_forward(self._data, mode='loss')
        loss, log_vars = model.parse_losses(losses)
        if not optim_wrapper.clip_grad_kwargs:
            optim_wrapper.update_params(loss)
            return log_vars
        # OptimWrapper.update_params with clip_grad, less its float(grad_norm) for the message hub (a host sync):
        # the norm goes out with the log variables, and the runner logs it as train/grad_norm as before
        optim_wrapper.backward(loss)
        params = [p for group in optim_wrapper.optimizer.param_groups for p in group['params']
                  if p.requires_grad and p.grad is not None]
        grad_norm = optim_wrapper.clip_func(params, **optim_wrapper.clip_grad_kwargs) if params else None
        if grad_norm is not None:  # (clip_grad_value_ returns None)
            log_vars['grad_norm'] = grad_norm
        optim_wrapper.optimizer.step()
        optim_wrapper.zero_grad()
        return log_vars
