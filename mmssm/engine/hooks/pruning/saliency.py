"""One-shot gradient-saliency pruning: SNIP and the study's |grad| variant (docs/pruning.md#saliency)."""
import torch

from mmssm.registry import HOOKS

from .base import BasePruningHook
from .masks import check_fraction

CRITERIA = ('snip', 'grad')


def saliency_scores(model, batches, params: dict, criterion='snip') -> dict:
    """Scores of ``params`` from the loss gradients summed over ``batches`` (preprocessed ``dict(inputs,
    data_samples)``): ``snip``: |w * g|; ``grad``: |g| (the study's s * ||g_w||, s a constant scale)."""
    if criterion not in CRITERIA:
        raise ValueError(f'criterion={criterion!r} is not one of {CRITERIA}')
    names = list(params)
    total = {n: torch.zeros_like(params[n]) for n in names}
    for data in batches:
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                total[n] += g.detach()
    if criterion == 'snip':
        return {n: (params[n].detach() * total[n]).abs() for n in names}
    return {n: total[n].abs() for n in names}


@HOOKS.register_module()
class GradientSaliencyHook(BasePruningHook):
    """Before iteration ``at_iter``, score weights on ``num_batches`` training batches (a fresh pass of the train
    dataloader, RNG forked and seeded with ``seed``: deterministic), prune to ``target_sparsity`` once, and keep
    the mask for the rest of training."""

    def __init__(self, target_sparsity, criterion='snip', num_batches=1, at_iter=0, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.target_sparsity = check_fraction('target_sparsity', target_sparsity)
        if criterion not in CRITERIA:
            raise ValueError(f'criterion={criterion!r} is not one of {CRITERIA}')
        if int(num_batches) < 1 or int(at_iter) < 0:
            raise ValueError(f'num_batches={num_batches!r} must be >= 1 and at_iter={at_iter!r} >= 0')
        self.criterion, self.num_batches, self.at_iter, self.seed = criterion, int(num_batches), int(at_iter), seed
        self.done = False

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self.done or runner.iter < self.at_iter:
            return
        model = self.unwrap(runner)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            batches, loader = [], iter(runner.train_dataloader)
            for _ in range(self.num_batches):
                batches.append(model.data_preprocessor(next(loader), True))
            scores = saliency_scores(model, batches, self.masks.params, self.criterion)
        self.update_masks(runner, self.target_sparsity, scores)
        self.done = True

    def schedule_state(self) -> dict:
        return dict(done=self.done)

    def load_schedule_state(self, state: dict) -> None:
        self.done = bool(state['done'])
