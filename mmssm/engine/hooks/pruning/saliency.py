"""One-shot gradient-saliency pruning: SNIP and the study's |grad| variant (docs/pruning.md#saliency)."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

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
    """Before iteration ``at_iter``, score weights on ``num_batches`` training batches, prune to ``target_sparsity``
    once, and keep the mask for the rest of training.

    The batches come from a separate loader over the train dataset (its batch size and collate function, order
    shuffled by a generator seeded with ``seed``, data augmentation under torch / numpy / random states seeded with
    ``seed`` and restored afterwards): deterministic, the same on every rank (so DDP ranks get the same mask), and
    the training loader's sampler is left alone.
    """

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
        states = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                np.random.seed(self.seed)
                random.seed(self.seed)
                batches = [model.data_preprocessor(b, True) for b in self.scoring_batches(runner.train_dataloader)]
                scores = saliency_scores(model, batches, self.masks.params, self.criterion)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
        self.update_masks(runner, self.target_sparsity, scores)
        self.done = True

    def scoring_batches(self, train_loader) -> list:
        dataset = train_loader.dataset
        loader = DataLoader(dataset, batch_size=train_loader.batch_size, collate_fn=train_loader.collate_fn,
                            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(self.seed)))
        batches, it = [], iter(loader)
        while len(batches) < self.num_batches:
            try:
                batches.append(next(it))
            except StopIteration:  # fewer batches than asked: another shuffled pass
                it = iter(loader)
        return batches

    def schedule_state(self) -> dict:
        return dict(done=self.done)

    def load_schedule_state(self, state: dict) -> None:
        self.done = bool(state['done'])
