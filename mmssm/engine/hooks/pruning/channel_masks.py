"""Channel (structured) granularity: keep-vectors over the units of :func:`mmssm.pruning.structured_groups` (SSM
inner channels, attention heads, MLP hidden units, conv-block channels), expanded to parameter masks.

A pruned unit zeroes the slice of *every* member parameter (in_proj x/z rows, conv1d, x_proj / out_proj columns,
dt_proj, A_log, D, biases, BN scales), so the masked model is the exported one padded with zeros, and
:func:`mmssm.pruning.masked_units` of the saved parameter masks gives exactly the units that
``tools/analysis/prune_export.py`` removes.
"""
import fnmatch

import torch
from torch import nn

from mmssm.pruning import structured_groups

from .masks import PruningMasks, check_fraction, check_scope

NORMS = ('l2', 'l1')
_WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def select_groups(model: nn.Module, include=None, exclude=()) -> list:
    """The structured groups of ``model`` whose names match one of ``include`` (all when None) and none of
    ``exclude`` (fnmatch on group names such as ``'backbone.layers.3.mixer.d_inner'``, ``'*.mlp.hidden'``)."""
    groups = [g for g in structured_groups(model)
              if (not include or any(fnmatch.fnmatch(g.name, p) for p in include))
              and not any(fnmatch.fnmatch(g.name, p) for p in exclude)]
    if not groups:
        raise ValueError(f"granularity='channel': no structured group (mmssm.pruning.structured_groups: Vim / "
                         f"MambaVision mixers, attention heads, MLPs, conv blocks) in {type(model).__name__} with "
                         f"include={include} exclude={list(exclude)}; use granularity='weight' for other models.")
    return groups


def unit_view(tensor: torch.Tensor, member, size: int) -> torch.Tensor:
    """(size, -1): ``member``'s slices of ``tensor``, one row per unit (a copy where the layout needs one)."""
    region = tensor.narrow(member.dim, member.offset, size * member.width).movedim(member.dim, 0)
    return region.reshape(size, -1)


def rank_units(scores: dict, alive: dict, fraction: float, scope: str) -> dict:
    """Keep-vectors pruning ``round(fraction * units)`` of each group (``'layer'``) or of all groups (``'global'``,
    one threshold) by lowest score; dead units rank lowest and stay dead; every group keeps at least one unit.
    Ties break by index (stable sort)."""
    check_fraction('sparsity', fraction)
    check_scope(scope)
    ranked = {}
    for name, s in scores.items():
        s = s.detach().float().cpu().clone()
        s[~alive[name].cpu()] = -float('inf')
        ranked[name] = s
    keep = {name: torch.ones_like(s, dtype=torch.bool) for name, s in ranked.items()}
    if scope == 'layer':
        for name, s in ranked.items():
            order = torch.argsort(s, stable=True)
            keep[name][order[:min(round(fraction * s.numel()), s.numel() - 1)]] = False
    else:
        names = [n for n, s in ranked.items() for _ in range(s.numel())]
        units = [u for s in ranked.values() for u in range(s.numel())]
        flat = torch.cat(list(ranked.values()))
        live = {name: s.numel() for name, s in ranked.items()}
        todo = round(fraction * flat.numel())
        for i in torch.argsort(flat, stable=True).tolist():
            if todo == 0:
                break
            if live[names[i]] > 1:
                keep[names[i]][units[i]] = False
                live[names[i]] -= 1
                todo -= 1
    return {name: k & alive[name].cpu() for name, k in keep.items()}


class ChannelMasks(PruningMasks):
    """Unit keep-vectors ``units[group name]`` (bool, (size,)) and the parameter masks they expand to.

    ``prune_to(sparsity, scores, scope)`` takes per-weight scores (|w|, |w g|, ...) like :class:`PruningMasks`,
    reduces each unit's slices of the Linear/Conv weight members to one number (``norm``: 'l2' = root mean square,
    'l1' = mean absolute value; means, so that units of different groups compare under ``scope='global'``) and
    prunes the fraction ``sparsity`` of the units. Buffers (BN running statistics) are members but not masked.
    """

    def __init__(self, model: nn.Module, groups: list, norm: str = 'l2'):
        if norm not in NORMS:
            raise ValueError(f'channel_norm={norm!r} is not one of {NORMS}')
        named = dict(model.named_parameters())
        self.groups = list(groups)
        super().__init__({m.param: named[m.param] for g in self.groups for m in g.members if m.param in named})
        weights = {f'{n}.weight' for n, mod in model.named_modules() if isinstance(mod, _WEIGHT_TYPES)}
        self.score_members = {g.name: [m for m in g.members if m.param in weights] for g in self.groups}
        self.norm = norm
        self.units = {g.name: torch.ones(g.size, dtype=torch.bool) for g in self.groups}

    # ---- state: parameter masks (what export reads) plus the unit vectors
    def load_units(self, units: dict) -> None:
        missing = set(self.units) - set(units)
        if missing:
            raise ValueError(f'pruning units missing for {sorted(missing)[:5]}; was the checkpoint written with the '
                             f'same structured groups?')
        self.units = {n: units[n].cpu().to(torch.bool).clone() for n in self.units}
        self.expand()

    def expand(self) -> None:
        """Parameter masks from the unit vectors."""
        for n, m in self.masks.items():
            self.masks[n] = torch.ones_like(m)
        for group in self.groups:
            for member in group.members:
                if member.param in self.masks:
                    mask = self.masks[member.param]
                    keep = self.units[group.name].to(mask.device).repeat_interleave(member.width)
                    shape = [1] * mask.dim()
                    shape[member.dim] = -1
                    # narrow is a view (unit_view may copy), so this writes into the mask
                    mask.narrow(member.dim, member.offset, keep.numel()).logical_and_(keep.view(shape))

    # ---- scores and thresholds
    @torch.no_grad()
    def unit_scores(self, scores: dict, norm: str = None) -> dict:
        norm = norm or self.norm
        out = {}
        for group in self.groups:
            rows = torch.cat([unit_view(scores[m.param].detach().float(), m, group.size)
                              for m in self.score_members[group.name]], dim=1).abs()
            out[group.name] = (rows.pow(2).mean(1).sqrt() if norm == 'l2' else rows.mean(1)).cpu()
        return out

    def prune_units(self, keep: dict) -> None:
        """AND ``keep`` (group name -> bool vector) into the unit vectors and re-expand."""
        for name, k in keep.items():
            self.units[name] &= k.cpu()
        self.expand()

    def prune_to(self, sparsity: float, scores: dict, scope: str = 'layer') -> None:
        self.prune_units(rank_units(self.unit_scores(scores), self.units, sparsity, scope))

    # ---- statistics
    def sparsity(self) -> dict:
        """Per-group fraction of pruned units, ``'total'`` over all units and ``'weights'``: the fraction of
        masked entries of the member parameters."""
        stats = {n: 1.0 - u.float().mean().item() for n, u in self.units.items()}
        stats['total'] = 1.0 - sum(int(u.sum()) for u in self.units.values()) / sum(
            u.numel() for u in self.units.values())
        stats['weights'] = super().sparsity()['total']
        return stats
