"""Early-bird tickets: draw a channel mask once it stops changing (docs/pruning.md#early-bird)."""
import torch
from torch import nn

from mmssm.registry import HOOKS

from .base import BasePruningHook
from .channel_masks import rank_units
from .masks import PruningMasks, check_fraction

SCORES = ('auto', 'bn', 'channel_l1')


def mask_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalized Hamming distance: the fraction of units on which two masks differ."""
    return (a.flatten() != b.flatten()).sum().item() / a.numel()  # exact ratio: d == epsilon counts


def _bn_weights(model) -> set:
    return {f'{n}.weight' for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine}


@HOOKS.register_module()
class EarlyBirdHook(BasePruningHook):
    """After every epoch, mask the ``prune_ratio`` lowest-scoring channels (see :meth:`channel_mask`); once the newest
    mask is within ``epsilon`` (normalized Hamming distance) of each of the previous ``window - 1`` masks, the
    ticket is drawn: the channels are pruned and training continues with the mask enforced.

    ``granularity='weight'``: channels are BN channels or output rows. ``'bn'``: |gamma| of every BatchNorm, trained
    with an L1 penalty ``l1_lambda * sign(gamma)`` added to the gradients (the original method); pruned channels zero
    gamma and beta. ``'channel_l1'``: mean |w| of each output row of every prunable Linear/Conv weight; pruned rows
    are zeroed. ``'auto'``: 'bn' when the model has BatchNorm layers, else 'channel_l1'.

    ``granularity='channel'``: channels are the units of :func:`mmssm.pruning.structured_groups` (exportable).
    A group with a BatchNorm scale member (MambaVision conv blocks) is scored by |gamma| with the L1 penalty under
    'bn' and 'auto'; the others by the mean |w| of the unit's weight slices under 'channel_l1' and 'auto' ('bn'
    keeps only the BN groups).

    Thresholds: one global threshold over BN scales (comparable across layers, as in the original method); ``scope``
    for the L1 scores, whose scale differs per layer (a global threshold would remove whole layers).
    """

    def __init__(self, prune_ratio, epsilon=0.1, window=5, score='auto', l1_lambda=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.prune_ratio = check_fraction('prune_ratio', prune_ratio)
        self.epsilon = check_fraction('epsilon', epsilon, upper_open=False)
        if int(window) < 2:
            raise ValueError(f'window={window!r} must be >= 2 (newest mask plus at least one previous)')
        if score not in SCORES:
            raise ValueError(f'score={score!r} is not one of {SCORES}')
        self.window, self.score, self.l1_lambda = int(window), score, float(l1_lambda)
        self.history = []
        self.drawn_epoch = -1
        self.bn_groups = {}  # channel granularity: group name -> BN weight name of the groups scored by |gamma|

    # ---- setup
    def select_groups(self, model) -> list:
        groups = super().select_groups(model)
        bn = _bn_weights(model)
        if self.score in ('bn', 'auto'):
            self.bn_groups = {g.name: m.param for g in groups for m in g.members if m.param in bn}
        if self.score != 'bn':
            return groups
        if not self.bn_groups:
            raise ValueError("EarlyBirdHook: score='bn' with granularity='channel' needs structured groups with a "
                             "BatchNorm (MambaVision conv blocks); this model has none. Use score='auto' or "
                             "'channel_l1'.")
        return [g for g in groups if g.name in self.bn_groups]

    def before_train(self, runner) -> None:
        model = self.unwrap(runner)
        if self.granularity == 'weight':
            if self.score == 'auto':
                self.score = 'bn' if _bn_weights(model) else 'channel_l1'
            if self.score == 'bn':
                self.include = (self.include or []) + [
                    f'{n}.{p}' for n, m in model.named_modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine for p in ('weight', 'bias')]
        super().before_train(runner)
        self._handles += [p.register_hook(lambda g, p=p: g + self.l1_lambda * torch.sign(p.detach()))
                          for p in self.bn_weights().values()]

    def bn_weights(self) -> dict:
        """The BN scales under the L1 penalty."""
        if self.granularity == 'channel':
            return {n: self.masks.params[n] for n in self.bn_groups.values()}
        if self.score != 'bn':
            return {}
        return {n: p for n, p in self.masks.params.items() if n.endswith('.weight') and p.dim() == 1}

    # ---- scores and masks
    def channel_scores(self) -> dict:
        """Name (parameter, or group with granularity='channel') -> one score per channel."""
        if self.granularity == 'channel':
            scores = self.masks.unit_scores({n: p.detach() for n, p in self.masks.params.items()}, 'l1')
            for group, bn_weight in self.bn_groups.items():
                scores[group] = self.masks.params[bn_weight].detach().abs().cpu()
            return scores
        if self.score == 'bn':
            return {n: p.detach().abs() for n, p in self.bn_weights().items()}
        return {n: p.detach().abs().flatten(1).mean(1) for n, p in self.masks.params.items() if p.dim() >= 2}

    def channel_mask(self) -> torch.Tensor:
        """Keep-mask over all channels (concatenated in order of :meth:`channel_scores`)."""
        scores = self.channel_scores()
        if self.granularity == 'channel':
            keep = {}
            for names, scope in ((set(self.bn_groups), 'global'), (set(scores) - set(self.bn_groups), self.scope)):
                family = {n: s for n, s in scores.items() if n in names}
                if family:
                    keep.update(rank_units(family, {n: self.masks.units[n] for n in family}, self.prune_ratio,
                                           scope))
            return torch.cat([keep[n] for n in scores])
        units = PruningMasks({n: s for n, s in scores.items()})
        units.prune_to(self.prune_ratio, scores, 'global' if self.score == 'bn' else self.scope)
        return torch.cat([m.cpu() for m in units.masks.values()])

    def ticket_ready(self) -> bool:
        if len(self.history) < self.window:
            return False
        newest = self.history[-1]
        return max(mask_distance(newest, old) for old in self.history[-self.window:-1]) <= self.epsilon

    def after_train_epoch(self, runner) -> None:
        if self.drawn_epoch >= 0:
            return
        self.history = (self.history + [self.channel_mask()])[-self.window:]
        if self.ticket_ready():
            self.draw(runner)
            self.drawn_epoch = runner.epoch

    def draw(self, runner) -> None:
        keep, start = self.history[-1], 0
        per_channel = {}
        for n, s in self.channel_scores().items():
            per_channel[n] = keep[start:start + s.numel()]
            start += s.numel()
        if self.granularity == 'channel':
            self.masks.prune_units(per_channel)
            self.after_masks_changed(runner)
            return
        for n, unit_keep in per_channel.items():
            unit_keep = unit_keep.to(self.masks.masks[n].device)
            if self.score == 'bn':
                self.masks.masks[n] &= unit_keep
                bias = n[:-len('weight')] + 'bias'
                if bias in self.masks.masks:
                    self.masks.masks[bias] &= unit_keep
            else:
                shape = (-1,) + (1,) * (self.masks.masks[n].dim() - 1)
                self.masks.masks[n] &= unit_keep.view(shape)
        self.after_masks_changed(runner)

    def schedule_state(self) -> dict:
        return dict(history=list(self.history), drawn_epoch=self.drawn_epoch, score=self.score)

    def load_schedule_state(self, state: dict) -> None:
        self.history, self.drawn_epoch = [h.cpu() for h in state['history']], int(state['drawn_epoch'])
