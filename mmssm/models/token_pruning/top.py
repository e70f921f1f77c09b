"""ToP-ViM token pruning (Zhan et al., "Exploring Token Pruning in Vision State Space Models", NeurIPS 2024).

After chosen blocks, each sample keeps its ``keep_ratio`` most important tokens by the clipped importance
sum_c max(0, y) of the block's mixer output y (the class token is always kept). The kept tokens are gathered
in their original order and the following blocks run on them alone. Hidden-state alignment: the scans of those
blocks still step over the pruned positions, which only decay the state (each with the delta of the kept token
it precedes in the scan's direction): the scan operator's ``gap_steps``, the compact form of its ``keep_mask``.
"""
import math

import torch
import torch.utils.checkpoint as cp

from mmssm.registry import MODELS

from ..backbones.vim import Vim
from ..layers import add_norm
from .common import gather_tokens, scatter_tokens

MODES = ('finetune', 'training_free')


def token_importance(mixer_output: torch.Tensor) -> torch.Tensor:
    """ToP-ViM's clipped importance of each token, sum over channels of max(0, y): (batch, L, C) -> (batch, L).
    The mixer output is in token order for both scan directions, so no flip is needed."""
    return mixer_output.float().clamp_min(0).sum(-1)


def select_tokens(importance: torch.Tensor, keep_ratio: float, protected: torch.Tensor | None = None):
    """Indices (batch, K) of the tokens to keep, ascending (original order): the ceil(keep_ratio * prunable)
    most important per sample, plus the ``protected`` (batch,) index (the class token) of every sample."""
    length = int(importance.shape[1])  # an int also under jit tracing (FLOP counting)
    prunable = length - (1 if protected is not None else 0)
    num_keep = min(prunable, max(1, math.ceil(keep_ratio * prunable)))
    scores = importance.detach()
    if protected is not None:
        scores = scores.scatter(1, protected[:, None], float('inf'))
        num_keep += 1
    keep = scores.topk(num_keep, dim=1).indices
    return keep.sort(dim=1).values


def gap_counts(positions: torch.Tensor, length: int) -> tuple:
    """Pruned tokens before and after each kept one: positions (batch, K) ascending original indices of the kept
    tokens of a length-``length`` sequence -> (forward, backward), each (batch, K) float."""
    before = torch.nn.functional.pad(positions, (1, 0), value=-1)
    after = torch.nn.functional.pad(positions, (0, 1), value=length)
    return (positions - before[:, :-1] - 1).float(), (after[:, 1:] - positions - 1).float()


@MODELS.register_module(name='ToP')
class ToPPruning:
    """The ToP-ViM schedule: where and how much to prune.

    Args:
        layers (Sequence[int]): blocks after which tokens are pruned (each prunes the tokens left by the last).
        keep_ratio (float | Sequence[float]): fraction of the prunable tokens kept at each of those blocks.
        mode (str): 'finetune' prunes in training and evaluation (train with it; the gather is differentiable
            with respect to the kept tokens); 'training_free' prunes only in evaluation, so a Vim trained dense
            is pruned at inference and trains dense.
    """

    def __init__(self, layers, keep_ratio=0.8, mode='finetune'):
        layers = tuple(layers)
        if not layers or any(not isinstance(i, int) or i < 0 for i in layers) or list(layers) != sorted(set(layers)):
            raise ValueError(f'ToP: layers must be ascending distinct non-negative block indices, got {layers!r}.')
        ratios = tuple(keep_ratio) if isinstance(keep_ratio, (tuple, list)) else (keep_ratio,) * len(layers)
        if len(ratios) != len(layers) or any(not 0 < r <= 1 for r in ratios):
            raise ValueError(f'ToP: keep_ratio must be in (0, 1], one value or one per layer ({len(layers)}), got '
                             f'{keep_ratio!r}.')
        if mode not in MODES:
            raise ValueError(f'ToP: mode must be one of {MODES}, got {mode!r}.')
        self.layers, self.keep_ratios, self.mode = layers, dict(zip(layers, ratios)), mode

    def active(self, training: bool) -> bool:
        return self.mode == 'finetune' or not training


@MODELS.register_module()
class ToPVim(Vim):
    """Vim with ToP-ViM token pruning: ``token_pruning=dict(type='mmssm.ToP', layers=(...), keep_ratio=...)``
    and every other argument of :class:`Vim` (same parameters, so Vim checkpoints load unchanged).

    Pruned tokens leave the sequence; the scans of later blocks account for them (see the module docstring).
    Dense outputs ('featmap', 'raw') are restored to full length: the kept tokens are scattered back and a
    pruned position holds its residual stream from the block where it was pruned (through the final norm for
    the last block). Needs the zoh discretization (the gap form is exact there) and no RoPE.
    """

    def __init__(self, *args, token_pruning=None, **kwargs):
        super().__init__(*args, **kwargs)
        if token_pruning is None:
            raise ValueError("ToPVim: token_pruning is required, e.g. dict(type='mmssm.ToP', layers=(10, 20), "
                             'keep_ratio=0.8); use mmssm.Vim for the dense model.')
        self.token_pruning = MODELS.build(token_pruning) if isinstance(token_pruning, dict) else token_pruning
        if max(self.token_pruning.layers) >= self.depth:
            raise ValueError(f'ToPVim: pruning layers {self.token_pruning.layers} must be < depth {self.depth}.')
        if self.discretization != 'zoh':
            raise ValueError(f"ToPVim: the hidden-state alignment needs discretization='zoh', got "
                             f'{self.discretization!r}.')
        if self.rope is not None:
            raise ValueError('ToPVim: rope=True is not supported (pruned tokens move); use rope=False.')

    def forward(self, x: torch.Tensor):
        tokens, grid, cls_index = self.embed(x)
        hidden, residual = tokens, None
        batch, length = tokens.shape[:2]
        pruning = self.token_pruning.active(self.training)
        positions = torch.arange(length, device=tokens.device).expand(batch, -1)  # original index of each token
        cls_at = None if cls_index is None else torch.full((batch,), cls_index, device=tokens.device)
        gaps, dropped = None, None  # dropped: the stream of the pruned tokens at full length, for dense outputs
        outs, last = {}, self.depth - 1
        for index, layer in enumerate(self.layers):
            if self.with_cp and hidden.requires_grad:
                hidden, residual = cp.checkpoint(self._block, layer, hidden, residual, gaps, use_reentrant=False)
            else:
                hidden, residual = self._block(layer, hidden, residual, gaps)
            if index in self.out_indices:
                outs[index] = self._pruned_output(index, last, hidden, residual, grid, cls_index, cls_at,
                                                  positions, dropped, length)
            if pruning and index in self.token_pruning.keep_ratios and index != last:
                keep = select_tokens(token_importance(hidden), self.token_pruning.keep_ratios[index], cls_at)
                if self.out_type in ('featmap', 'raw'):
                    stream = (residual + hidden).to(hidden.dtype)
                    dropped = stream if dropped is None else scatter_tokens(dropped, positions, stream)
                hidden, residual = gather_tokens(hidden, keep), gather_tokens(residual, keep)
                positions = positions.gather(1, keep)
                if cls_at is not None:
                    cls_at = (positions == cls_index).float().argmax(1)
                gaps = gap_counts(positions, length)
        return tuple(outs[index] for index in self.out_indices)

    @staticmethod
    def _block(layer, hidden, residual, gaps):
        """VimBlock.forward with the gap counts passed to its mixer."""
        hidden = layer.drop_path(hidden) if residual is not None else hidden
        normed, residual = add_norm(hidden, residual, layer.norm, layer.residual_in_fp32, layer.fused_add_norm)
        return layer.mixer(normed, gap_steps=gaps), residual

    def _pruned_output(self, index, last, hidden, residual, grid, cls_index, cls_at, positions, dropped, length):
        if self.feature_source == 'mixer':
            features = hidden
        elif index == last:
            features, _ = add_norm(self.final_drop_path(hidden), residual, self.norm_f, self.residual_in_fp32,
                                   self.fused_add_norm)
        else:
            features = residual + hidden
        if self.out_type == 'cls_token':
            return features[torch.arange(features.shape[0], device=features.device), cls_at]
        if self.out_type in ('mean', 'max') or dropped is None:
            return self._format(features, grid, cls_index)
        fill = dropped
        if index == last and self.feature_source == 'stream':
            fill = self.norm_f(dropped.to(self.norm_f.weight.dtype))
        return self._format(scatter_tokens(fill, positions, features), grid, cls_index)

