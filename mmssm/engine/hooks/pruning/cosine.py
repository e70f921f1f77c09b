"""Cosine-scheduled dynamic magnitude pruning (docs/pruning.md#cosine)."""
from mmssm.registry import HOOKS

from .base import BasePruningHook, cosine_sparsity
from .masks import check_fraction


@HOOKS.register_module()
class CosinePruningHook(BasePruningHook):
    """Prune by magnitude to s(t) = s0 + (s1 - s0)(1 - cos(pi (t - t0)/(t1 - t0)))/2 for t in [t0, t1].

    Args:
        start_sparsity (float): s0. target_sparsity (float): s1 (>= s0, < 1).
        begin, end (int): t0 < t1, in epochs (``by_epoch=True``) or iterations.
        interval (int): masks are updated every ``interval`` epochs/iterations from ``begin`` (and at ``end``).
        by_epoch (bool): t counts epochs (updated before each epoch) or iterations (before each iteration).
        Other arguments: see :class:`BasePruningHook`. Masks only shrink (no regrowth).
    """

    def __init__(self, target_sparsity, begin, end, start_sparsity=0.0, interval=1, by_epoch=True, **kwargs):
        super().__init__(**kwargs)
        self.start_sparsity = check_fraction('start_sparsity', start_sparsity)
        self.target_sparsity = check_fraction('target_sparsity', target_sparsity)
        if self.target_sparsity < self.start_sparsity:
            raise ValueError(f'target_sparsity={target_sparsity!r} is below start_sparsity={start_sparsity!r}')
        if not (0 <= begin < end):
            raise ValueError(f'begin={begin!r}, end={end!r}: need 0 <= begin < end')
        if int(interval) < 1:
            raise ValueError(f'interval={interval!r} must be a positive integer')
        self.begin, self.end, self.interval, self.by_epoch = int(begin), int(end), int(interval), by_epoch
        self.current = 0.0

    def sparsity_at(self, t) -> float:
        return cosine_sparsity(t, self.start_sparsity, self.target_sparsity, self.begin, self.end)

    def step(self, runner, t) -> None:
        if t < self.begin or ((t - self.begin) % self.interval and t < self.end):
            return
        target = self.sparsity_at(t)
        if target > self.current:
            self.update_masks(runner, target)
            self.current = target

    def before_train_epoch(self, runner) -> None:
        if self.by_epoch:
            self.step(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if not self.by_epoch:
            self.step(runner, runner.iter)

    def schedule_state(self) -> dict:
        return dict(current=self.current)

    def load_schedule_state(self, state: dict) -> None:
        self.current = float(state['current'])
