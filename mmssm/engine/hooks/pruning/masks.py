"""Per-weight pruning masks over an explicit prunable set (see docs/pruning.md).

Only the ``weight`` of ``nn.Linear`` / ``nn.ConvNd`` modules is prunable by default: norms, ``A_log``, ``D``,
biases and position/class tokens are never selected unless ``include`` names them explicitly.
"""
import fnmatch

import torch
from torch import nn

DEFAULT_EXCLUDE = ('*norm*', '*A_log*', '*.D', '*bias*', '*pos_embed*', '*cls_token*')
_PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
SCOPES = ('layer', 'global')


def select_prunable(model: nn.Module, include=None, exclude=DEFAULT_EXCLUDE) -> dict:
    """Name -> parameter of the prunable set: Linear/Conv weights not matching ``exclude``; ``include`` patterns
    (fnmatch on the full name) add any other parameter, e.g. ``'*.A_log'``, and override ``exclude``."""
    selected = {}
    for module_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            name = f'{module_name}.{pname}' if module_name else pname
            if include and any(fnmatch.fnmatch(name, p) for p in include):
                selected[name] = param
            elif (isinstance(module, _PRUNABLE_TYPES) and pname == 'weight'
                  and not any(fnmatch.fnmatch(name, p) for p in exclude)):
                selected[name] = param
    if not selected:
        raise ValueError(f'no prunable parameters in the model with include={include} exclude={exclude}; '
                         'widen include or narrow exclude')
    return selected


def check_fraction(name: str, value: float, upper_open: bool = True) -> float:
    if not (0.0 <= float(value) < 1.0 if upper_open else 0.0 <= float(value) <= 1.0):
        raise ValueError(f'{name}={value!r} must lie in [0, 1{")" if upper_open else "]"}')
    return float(value)


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f'scope={scope!r} is not one of {SCOPES}')
    return scope


class PruningMasks:
    """Boolean keep-masks (True = kept) for a set of parameters; pruned weights are exactly zero after
    :meth:`apply`. Masks only shrink: scores of pruned weights are -inf, so no weight regrows."""

    def __init__(self, params: dict):
        self.params = dict(params)
        self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()}

    # ---- state
    def state_dict(self) -> dict:
        return {n: m.detach().cpu().clone() for n, m in self.masks.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.masks) - set(state)
        if missing:
            raise ValueError(f'pruning masks missing for {sorted(missing)[:5]}; was the checkpoint written with '
                             'the same prunable set?')
        for n in self.masks:
            self.masks[n] = state[n].to(device=self.params[n].device, dtype=torch.bool).clone()

    # ---- enforcement
    @torch.no_grad()
    def apply(self, params: dict = None) -> None:
        """Zero the pruned entries of ``params`` (default: the tracked parameters; an EMA copy may be passed)."""
        params = self.params if params is None else params
        for n, m in self.masks.items():
            if n in params:
                params[n].mul_(m.to(params[n].device))

    @torch.no_grad()
    def mask_optimizer_state(self, optimizer) -> None:
        """Zero optimizer moments of pruned entries so AdamW cannot move them (state shaped like the weight)."""
        for n, m in self.masks.items():
            for value in optimizer.state.get(self.params[n], {}).values():
                if torch.is_tensor(value) and value.shape == m.shape:
                    value.mul_(m)

    def grad_hooks(self) -> list:
        """Register backward hooks that zero pruned gradients before any optimizer step (AMP-scaled or not)."""
        return [p.register_hook(lambda g, n=n: g * self.masks[n].to(g.device)) for n, p in self.params.items()]

    # ---- thresholds
    @torch.no_grad()
    def prune_to(self, sparsity: float, scores: dict, scope: str = 'layer') -> None:
        """Keep the highest-scoring weights so that ``sparsity`` of each layer (``layer``) or of the whole set
        (``global``) is pruned; already-pruned weights rank lowest. Ties break by index (stable sort)."""
        check_fraction('sparsity', sparsity, upper_open=True)
        check_scope(scope)
        ranked = {}
        for n, m in self.masks.items():
            s = scores[n].detach().float().flatten().to(m.device).clone()
            s[~m.flatten()] = -float('inf')
            ranked[n] = s
        if scope == 'layer':
            for n, s in ranked.items():
                self.masks[n] = self._keep_top(s, round(sparsity * s.numel())).view_as(self.masks[n])
        else:
            flat = torch.cat([s.cpu() for s in ranked.values()])
            keep = self._keep_top(flat, round(sparsity * flat.numel()))
            start = 0
            for n, s in ranked.items():
                self.masks[n] = keep[start:start + s.numel()].view_as(self.masks[n]).to(s.device)
                start += s.numel()

    @staticmethod
    def _keep_top(scores: torch.Tensor, num_pruned: int) -> torch.Tensor:
        order = torch.argsort(scores, stable=True)
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep[order[:num_pruned]] = False
        return keep

    # ---- statistics
    def sparsity(self) -> dict:
        """Per-parameter fraction of pruned entries and ``'total'`` over the whole set."""
        stats = {n: 1.0 - m.float().mean().item() for n, m in self.masks.items()}
        total = sum(m.numel() for m in self.masks.values())
        stats['total'] = 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total
        return stats
