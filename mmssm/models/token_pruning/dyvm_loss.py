"""The DyVM training loss besides the classification loss: keep-ratio losses for tokens and blocks, and
distillation of the logits and of the kept tokens' final features from a frozen dense teacher.

Defaults are the DyVM repository's Vim-T/S scripts (token and block pruning weights 10, block keep ratio 0.8,
distillation weight 0.5 for both terms)."""
import torch
import torch.nn.functional as F
from torch import nn

from mmssm.registry import MODELS

from .common import gather_tokens


def token_ratio_loss(decisions, keep_ratios) -> torch.Tensor:
    """Mean over stages of mean over samples of (kept fraction of the patch tokens - target)^2.

    decisions: per stage, (batch, N) 0/1 keep decisions of the N patch tokens; keep_ratios: target per stage."""
    if len(decisions) != len(keep_ratios):
        raise ValueError(f'token_ratio_loss: {len(decisions)} stages of decisions but {len(keep_ratios)} targets.')
    terms = [(decision.float().mean(1) - target).square().mean() for decision, target in zip(decisions, keep_ratios)]
    return torch.stack(terms).mean()


def block_ratio_loss(gates: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """(mean gate over samples, blocks and directions - target)^2."""
    return (gates.float().mean() - keep_ratio).square()


def logit_distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the class distributions, summed over classes, averaged over samples."""
    return F.kl_div(F.log_softmax(logits.float(), dim=-1), F.log_softmax(teacher_logits.float(), dim=-1),
                    reduction='batchmean', log_target=True)


def token_distill_loss(tokens, teacher_tokens, positions, keep, cls_at) -> torch.Tensor:
    """Mean squared error between the kept patch tokens' final features and the teacher's at the same original
    positions (the class token is distilled through the logits).

    tokens: (batch, L, C) per slot; teacher_tokens: (batch, L, C) in original order; positions: (batch, L)
    original index of each slot; keep: (batch, L) bool; cls_at: (batch,) the class token's slot."""
    teacher = gather_tokens(teacher_tokens, positions)
    slots = torch.arange(tokens.shape[1], device=tokens.device)
    selected = keep & (slots[None] != cls_at[:, None])
    if not bool(selected.any()):
        return tokens.sum() * 0
    return F.mse_loss(tokens[selected].float(), teacher[selected].float())


@MODELS.register_module()
class DyVMLoss(nn.Module):
    """The weighted DyVM terms beside the classification loss (which the classifier's head computes).

    Args:
        token_ratio_weight (float): weight of :func:`token_ratio_loss`. Default: 10.
        block_ratio_weight (float): weight of :func:`block_ratio_loss`. Default: 10.
        block_keep_ratio (float): target mean gate (fraction of scan directions run). Default: 0.8.
        logit_distill_weight (float): weight of :func:`logit_distill_loss`. Default: 0.5.
        token_distill_weight (float): weight of :func:`token_distill_loss`. Default: 0.5.
    """

    def __init__(self, token_ratio_weight=10.0, block_ratio_weight=10.0, block_keep_ratio=0.8,
                 logit_distill_weight=0.5, token_distill_weight=0.5):
        super().__init__()
        weights = dict(token_ratio_weight=token_ratio_weight, block_ratio_weight=block_ratio_weight,
                       logit_distill_weight=logit_distill_weight, token_distill_weight=token_distill_weight)
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'DyVMLoss: {name} must be a number >= 0, got {value!r}.')
        if not 0 < block_keep_ratio <= 1:
            raise ValueError(f'DyVMLoss: block_keep_ratio must be in (0, 1], got {block_keep_ratio!r}.')
        self.token_ratio_weight, self.block_ratio_weight = float(token_ratio_weight), float(block_ratio_weight)
        self.logit_distill_weight = float(logit_distill_weight)
        self.token_distill_weight = float(token_distill_weight)
        self.block_keep_ratio = float(block_keep_ratio)

    def forward(self, student: dict, logits: torch.Tensor, teacher_logits: torch.Tensor,
                teacher_tokens: torch.Tensor) -> dict:
        """student: :meth:`DyVim.forward_masked`'s dict; logits: the student's class logits; teacher_logits,
        teacher_tokens (batch, L, C): the teacher's logits and last-block normed tokens in original order.
        Returns a dict of weighted losses (names start with ``loss_``)."""
        losses = {}
        if student['decisions']:
            losses['loss_token_ratio'] = self.token_ratio_weight * token_ratio_loss(student['decisions'],
                                                                                   student['keep_ratios'])
        if student['gates'] is not None:
            losses['loss_block_ratio'] = self.block_ratio_weight * block_ratio_loss(student['gates'],
                                                                                   self.block_keep_ratio)
        losses['loss_logit_distill'] = self.logit_distill_weight * logit_distill_loss(logits, teacher_logits)
        losses['loss_token_distill'] = self.token_distill_weight * token_distill_loss(
            student['tokens'], teacher_tokens, student['positions'], student['keep'], student['cls_at'])
        return losses
