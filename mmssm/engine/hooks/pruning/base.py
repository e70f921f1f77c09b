"""Shared machinery of the weight-pruning hooks: mask enforcement, EMA masking, checkpointing, logging.

Order per iteration: backward hooks zero pruned gradients before the optimizer step (so AdamW moments and grad
clipping see no pruned gradient, also under AMP loss scaling); ``after_train_iter`` (priority HIGH, i.e.
before EMAHook, NORMAL or ABOVE_NORMAL) re-zeroes pruned weights, so the EMA update averages masked weights into an
EMA copy that is itself masked whenever masks change: pruned entries stay exactly zero in both.
"""
import math

import torch
from mmengine.hooks import EMAHook, Hook
from mmengine.model import is_model_wrapper

from .masks import DEFAULT_EXCLUDE, PruningMasks, check_scope, select_prunable

CHECKPOINT_KEY = 'mmssm_pruning'


class BasePruningHook(Hook):
    """Args:
        scope (str): 'layer' (each parameter pruned to the sparsity) or 'global' (one threshold over the set).
        include (list[str] | None): fnmatch patterns of extra parameters to prune (e.g. ``'*.A_log'``).
        exclude (list[str]): patterns removed from the default Linear/Conv weight set.
        log_per_layer (bool): also log every parameter's sparsity when masks change.
    """

    priority = 'HIGH'  # before EMAHook (NORMAL by default, ABOVE_NORMAL in mmssm's configs) in after_train_iter

    def __init__(self, scope='layer', include=None, exclude=DEFAULT_EXCLUDE, log_per_layer=True):
        self.scope = check_scope(scope)
        self.include = list(include) if include else None
        self.exclude = tuple(exclude)
        self.log_per_layer = log_per_layer
        self.masks = None
        self._handles = []
        self._loaded = None

    # ---- helpers
    @staticmethod
    def unwrap(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def ema_params(self, runner) -> dict:
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model'):
                return dict(hook.ema_model.module.named_parameters())
        return {}

    def enforce(self, runner) -> None:
        self.masks.apply()
        self.masks.apply(self.ema_params(runner))

    def update_masks(self, runner, sparsity, scores=None) -> None:
        """Prune to ``sparsity`` (magnitude scores by default), enforce, clean optimizer state, log."""
        if scores is None:
            scores = {n: p.detach().abs() for n, p in self.masks.params.items()}
        self.masks.prune_to(sparsity, scores, self.scope)
        self.after_masks_changed(runner)

    def after_masks_changed(self, runner) -> None:
        self.enforce(runner)
        optim_wrapper = runner.optim_wrapper
        wrappers = optim_wrapper.values() if hasattr(optim_wrapper, 'optim_wrappers') else [optim_wrapper]
        for wrapper in wrappers:
            self.masks.mask_optimizer_state(wrapper.optimizer)
        self.log_sparsity(runner)

    def log_sparsity(self, runner) -> None:
        stats = self.masks.sparsity()
        runner.message_hub.update_scalar('train/sparsity', stats['total'])
        msg = f'{type(self).__name__}: total sparsity {stats["total"]:.4f}'
        if self.log_per_layer:
            msg += '\n' + '\n'.join(f'  {n}: {v:.4f}' for n, v in stats.items() if n != 'total')
        runner.logger.info(msg)

    # ---- subclass state (plain containers / tensors / numbers only)
    def schedule_state(self) -> dict:
        return {}

    def load_schedule_state(self, state: dict) -> None:
        pass

    # ---- hook points
    def before_train(self, runner) -> None:
        self.masks = PruningMasks(select_prunable(self.unwrap(runner), self.include, self.exclude))
        if self._loaded is not None:
            self.masks.load_state_dict(self._loaded['masks'])
            self.load_schedule_state(self._loaded['schedule'])
            self._loaded = None
            self.after_masks_changed(runner)
        self._handles = self.masks.grad_hooks()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.enforce(runner)

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.masks is not None:
            checkpoint[CHECKPOINT_KEY] = dict(masks=self.masks.state_dict(), schedule=self.schedule_state())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if CHECKPOINT_KEY in checkpoint:
            self._loaded = checkpoint[CHECKPOINT_KEY]


def cosine_sparsity(t, s0, s1, t0, t1) -> float:
    """s(t) = s0 + (s1 - s0)(1 - cos(pi (t - t0)/(t1 - t0)))/2, clamped to s0 before t0 and s1 after t1."""
    if t <= t0:
        return s0
    if t >= t1:
        return s1
    return s0 + (s1 - s0) * (1 - math.cos(math.pi * (t - t0) / (t1 - t0))) / 2


def clone_state(value):
    """Deep copy of nested containers, cloning tensors (for bit-exact rewinds)."""
    if torch.is_tensor(value):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: clone_state(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clone_state(v) for v in value)
    return value
