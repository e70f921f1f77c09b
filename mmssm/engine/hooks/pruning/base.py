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

from ..weights_only_checkpoint import from_plain, to_plain
from .channel_masks import NORMS, ChannelMasks, select_groups
from .masks import DEFAULT_EXCLUDE, PruningMasks, check_scope, select_prunable

CHECKPOINT_KEY = 'mmssm_pruning'
GRANULARITIES = ('weight', 'channel')


class BasePruningHook(Hook):
    """Args:
        granularity (str): 'weight' (unstructured: single weights of the prunable set) or 'channel' (whole
            structured units of :func:`mmssm.pruning.structured_groups`: SSM inner channels, attention heads, MLP
            hidden units, conv-block channels; every member slice masked together, exportable with
            ``tools/analysis/prune_export.py``). Sparsity then means the fraction of units.
        scope (str): 'layer' (each parameter / group pruned to the sparsity) or 'global' (one threshold over the set).
        include (list[str] | None): fnmatch patterns: 'weight': extra parameters to prune (e.g. ``'*.A_log'``);
            'channel': only the groups whose names match (e.g. ``'*.mixer.d_inner'``).
        exclude (list[str] | None): patterns removed: 'weight': from the Linear/Conv weight set (default
            ``DEFAULT_EXCLUDE``: norms, A_log, D, biases, tokens); 'channel': groups by name (default: none).
        channel_norm (str): 'l2' (root mean square) or 'l1' (mean |.|) of a unit's weight scores ('channel').
        log_per_layer (bool): also log every parameter's (group's) sparsity when masks change.
    """

    priority = 'HIGH'  # before EMAHook (NORMAL by default, ABOVE_NORMAL in mmssm's configs) in after_train_iter

    def __init__(self, granularity='weight', scope='layer', include=None, exclude=None, channel_norm='l2',
                 log_per_layer=True):
        if granularity not in GRANULARITIES:
            raise ValueError(f'granularity={granularity!r} is not one of {GRANULARITIES}')
        if channel_norm not in NORMS:
            raise ValueError(f'channel_norm={channel_norm!r} is not one of {NORMS}')
        self.granularity = granularity
        self.scope = check_scope(scope)
        self.include = list(include) if include else None
        default = DEFAULT_EXCLUDE if granularity == 'weight' else ()
        self.exclude = tuple(default if exclude is None else exclude)
        self.channel_norm = channel_norm
        self.log_per_layer = log_per_layer
        self.masks = None
        self._handles = []
        self._loaded = None

    # ---- helpers
    @staticmethod
    def unwrap(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    @staticmethod
    def ema_model(runner):
        """EMAHook's averaged model (``.module`` is the EMA copy), or None."""
        for hook in runner.hooks:
            if isinstance(hook, EMAHook) and hasattr(hook, 'ema_model'):
                return hook.ema_model
        return None

    def ema_params(self, runner) -> dict:
        ema = self.ema_model(runner)
        return dict(ema.module.named_parameters()) if ema is not None else {}

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
        if 'weights' in stats:  # channel granularity: 'total' counts units
            runner.message_hub.update_scalar('train/weight_sparsity', stats['weights'])
            msg = f'{type(self).__name__}: units pruned {stats["total"]:.4f}, member weights {stats["weights"]:.4f}'
        if self.log_per_layer:
            msg += '\n' + '\n'.join(f'  {n}: {v:.4f}' for n, v in stats.items() if n not in ('total', 'weights'))
        runner.logger.info(msg)

    # ---- subclass state (plain containers / tensors / numbers only)
    def schedule_state(self) -> dict:
        return {}

    def load_schedule_state(self, state: dict) -> None:
        pass

    # ---- hook points
    def select_groups(self, model) -> list:
        return select_groups(model, self.include, self.exclude)

    def build_masks(self, model) -> PruningMasks:
        if self.granularity == 'channel':
            return ChannelMasks(model, self.select_groups(model), self.channel_norm)
        return PruningMasks(select_prunable(model, self.include, self.exclude))

    def before_train(self, runner) -> None:
        self.masks = self.build_masks(self.unwrap(runner))
        if self._loaded is not None:
            saved = self._loaded.get('granularity', 'weight')
            if saved != self.granularity:
                raise ValueError(f'the checkpoint was pruned with granularity={saved!r}, this hook has '
                                 f'granularity={self.granularity!r}; resume with the same config')
            self.masks.load_state_dict(self._loaded['masks'])
            if self.granularity == 'channel':
                self.masks.load_units(self._loaded['units'])
            self.load_schedule_state(from_plain(self._loaded['schedule']))
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
            state = dict(granularity=self.granularity, masks=self.masks.state_dict(),
                         schedule=to_plain(self.schedule_state()))
            if self.granularity == 'channel':
                state['units'] = {n: u.clone() for n, u in self.masks.units.items()}
            checkpoint[CHECKPOINT_KEY] = state

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
