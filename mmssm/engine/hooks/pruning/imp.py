"""Iterative magnitude pruning with rewinding to step k (docs/pruning.md#imp)."""
from mmssm.registry import HOOKS

from .base import BasePruningHook, clone_state
from .masks import check_fraction


def _schedulers(runner) -> list:
    schedulers = runner.param_schedulers or []
    if isinstance(schedulers, dict):
        return [s for name in sorted(schedulers) for s in schedulers[name]]
    return list(schedulers)


@HOOKS.register_module()
class IMPRewindHook(BasePruningHook):
    """Save weights, optimizer, LR-scheduler and EMA state before iteration ``rewind_iter`` (k); before iteration
    k + r * ``round_iters`` (r = 1, 2, ...), prune ``prune_fraction`` (q) of the surviving weights (units with
    ``granularity='channel'``) by magnitude and rewind the model, optimizer, schedulers and EMA copy to the saved
    state (survivors bit-equal to it), until the target. Sparsity after r rounds: 1 - (1 - q)^r, the last round
    capped at the target. The saved state goes into checkpoints as plain tensors / containers (weights_only)."""

    def __init__(self, target_sparsity, round_iters, prune_fraction=0.2, rewind_iter=0, **kwargs):
        super().__init__(**kwargs)
        self.target_sparsity = check_fraction('target_sparsity', target_sparsity)
        self.prune_fraction = check_fraction('prune_fraction', prune_fraction)
        if self.prune_fraction == 0:
            raise ValueError('prune_fraction=0 never reaches the target; use a value in (0, 1)')
        if int(round_iters) < 1 or int(rewind_iter) < 0:
            raise ValueError(f'round_iters={round_iters!r} must be >= 1 and rewind_iter={rewind_iter!r} >= 0')
        self.round_iters, self.rewind_iter = int(round_iters), int(rewind_iter)
        self.current = 0.0
        self.rounds = 0
        self.snapshot = None

    def take_snapshot(self, runner) -> None:
        ema = self.ema_model(runner)
        self.snapshot = dict(model=clone_state(self.unwrap(runner).state_dict()),
                             optim=clone_state(runner.optim_wrapper.state_dict()),
                             schedulers=[clone_state(s.state_dict()) for s in _schedulers(runner)],
                             ema=None if ema is None else clone_state(ema.state_dict()))

    def rewind(self, runner) -> None:
        self.unwrap(runner).load_state_dict(clone_state(self.snapshot['model']))
        runner.optim_wrapper.load_state_dict(clone_state(self.snapshot['optim']))
        for scheduler, state in zip(_schedulers(runner), self.snapshot['schedulers']):
            scheduler.load_state_dict(clone_state(state))
        ema = self.ema_model(runner)
        if ema is not None:
            if self.snapshot.get('ema') is None:
                raise ValueError('IMPRewindHook: an EMAHook is present but the saved step-k state has no EMA copy '
                                 '(the EMAHook was added after the state was saved); cannot rewind it')
            ema.load_state_dict(clone_state(self.snapshot['ema']))

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        # Here, not in after_train_iter: the LR schedulers have already stepped for the finished iteration, so
        # iteration k + r * round_iters starts exactly from the saved state.
        it = runner.iter
        if self.snapshot is None:
            if it == self.rewind_iter:
                self.take_snapshot(runner)
        elif (self.current < self.target_sparsity and it > self.rewind_iter
              and (it - self.rewind_iter) % self.round_iters == 0):
            sparsity = min(self.target_sparsity, 1 - (1 - self.current) * (1 - self.prune_fraction))
            scores = {n: p.detach().abs() for n, p in self.masks.params.items()}
            self.masks.prune_to(sparsity, scores, self.scope)
            self.current, self.rounds = sparsity, self.rounds + 1
            self.rewind(runner)
            self.after_masks_changed(runner)  # zero pruned weights / moments of the rewound state

    def schedule_state(self) -> dict:
        return dict(current=self.current, rounds=self.rounds, snapshot=self.snapshot)

    def load_schedule_state(self, state: dict) -> None:
        self.current, self.rounds, self.snapshot = float(state['current']), int(state['rounds']), state['snapshot']
