"""DyVM token pruning and block selection for Vim (Wu et al., "Dynamic Vision Mamba", arXiv 2504.04787).

Token pruning: before each chosen block a DynamicViT-style predictor scores the patch tokens of the stream
``hidden + residual`` (the class token is never pruned), and stage s keeps ``int(rho^s * N)`` of the N patch
tokens. The kept tokens are rearranged to the front in their original order, with the class token in the middle
of the kept block (slot k // 2 of k kept patches; slot 0 for a head class token), the pruned ones behind them.

- Inference (gathered): top-k by the predictor's keep score; the sequence is cut to the kept block.
- Training (masked): a hard Gumbel-softmax draws each sample's keep decisions (straight-through gradient); the
  sequence keeps its length, pruned tokens behind the kept block. Each mixer zeroes their convolution input (the
  backward convolution at the end of the kept block reads zeros, as at a sequence end), steps its scans over
  them with the operator's ``keep_mask`` (the backward scan's state stays zero through them) and its output there
  is zeroed (their residual stream stays as it was when they were pruned). So a kept token gets exactly what it
  gets in the cut sequence: training computes the function that inference runs.

Block selection: before each block's mixer a linear gate on the class token's normed features gives a logit per
scan direction and sample: hard Gumbel (logistic noise, straight-through) in training, ``sigmoid(logit) >
gate_threshold`` at inference. A direction gated off contributes nothing for its sample and at inference is not
computed for it (``MambaMixer(direction_gate=...)``).
"""
import math
from collections.abc import Sequence

import torch
import torch.utils.checkpoint as cp
from mmengine.model.weight_init import trunc_normal_
from torch import nn

from mmssm.registry import MODELS

from ..backbones.vim import Vim
from ..layers import add_norm
from .common import gather_tokens, scatter_tokens

# keep ratio rho per stage when none is given: the DyVM scripts' 0.9 for Vim-T, 0.7 for Vim-S/B
DEFAULT_KEEP_RATIO = {'tiny': 0.9, 't': 0.9}
DEFAULT_KEEP_RATIO_OTHERS = 0.7
REFERENCE_DEPTH, REFERENCE_LAYERS = 24, (6, 12, 18)
# initial gate logit: every direction starts on (sigmoid(5) = 0.993), so fine-tuning starts from the dense model
GATE_INIT_LOGIT = 5.0
DENSE_OUT_TYPES = ('featmap', 'raw')


class TokenKeepPredictor(nn.Module):
    """DynamicViT's prediction module: per-token keep/drop logits from the token and a global feature.

    ``LayerNorm -> Linear(C, C) -> GELU`` gives each token a local half and a global half; the global half is
    averaged over the tokens still kept (``policy``); an MLP ``C -> C/2 -> C/4 -> 2`` on [local, global mean]
    gives the (keep, drop) logits.
    """

    def __init__(self, embed_dims: int):
        super().__init__()
        self.in_mlp = nn.Sequential(nn.LayerNorm(embed_dims), nn.Linear(embed_dims, embed_dims), nn.GELU())
        self.out_mlp = nn.Sequential(
            nn.Linear(embed_dims, embed_dims // 2), nn.GELU(), nn.Linear(embed_dims // 2, embed_dims // 4),
            nn.GELU(), nn.Linear(embed_dims // 4, 2))

    def forward(self, tokens: torch.Tensor, policy: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (batch, N, C), policy (batch, N) 1 for a kept token, 0 for a pruned one (None: all kept) ->
        logits (batch, N, 2): keep, drop."""
        features = self.in_mlp(tokens)
        half = features.shape[-1] // 2
        local, pooled = features[..., :half], features[..., half:]
        if policy is None:
            pooled = pooled.mean(1, keepdim=True)
        else:
            weight = policy.unsqueeze(-1).to(pooled.dtype)
            pooled = (pooled * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1)
        return self.out_mlp(torch.cat([local, pooled.expand(-1, local.shape[1], -1)], dim=-1))


def keep_score(logits: torch.Tensor) -> torch.Tensor:
    """The ranking score of a token: its keep-vs-drop log-odds."""
    return logits[..., 0] - logits[..., 1]


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """The 0/1 values of ``hard`` (exactly) with the gradient of ``soft``: a hard Gumbel sample's estimator."""
    return hard.to(soft.dtype) + (soft - soft.detach())


def _insert(sequence: torch.Tensor, item: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """sequence (batch, M[, C]) with ``item`` (batch[, C]) inserted at slot ``at`` (batch,): (batch, M + 1[, C])."""
    batch, length = sequence.shape[:2]
    slots = torch.arange(length + 1, device=sequence.device).expand(batch, -1)
    source = (slots - (slots > at[:, None]).long()).clamp(max=length - 1)
    is_item = slots == at[:, None]
    if sequence.dim() == 3:
        gathered = gather_tokens(sequence, source)
        return torch.where(is_item.unsqueeze(-1), item.unsqueeze(1).to(gathered.dtype), gathered)
    return torch.where(is_item, item[:, None].to(sequence.dtype), sequence.gather(1, source))


def _patch_slots(cls_at: torch.Tensor, length: int) -> torch.Tensor:
    """The slots (batch, length - 1) of the patch tokens of a sequence whose class token is at ``cls_at``."""
    slots = torch.arange(length - 1, device=cls_at.device).expand(cls_at.shape[0], -1)
    return slots + (slots >= cls_at[:, None]).long()


def default_pruning_layers(depth: int) -> tuple:
    """DyVM's blocks 6, 12, 18 of 24, scaled to ``depth`` (floor of depth * s / 4), kept in [1, depth - 1]."""
    layers = {min(max(depth * layer // REFERENCE_DEPTH, 1), depth - 1) for layer in REFERENCE_LAYERS}
    return tuple(sorted(layers))


@MODELS.register_module()
class DyVim(Vim):
    """Vim with DyVM token pruning and per-sample, per-direction block selection (see the module docstring).

    Takes every argument of :class:`Vim` (the same parameter names, so Vim checkpoints load unchanged; the
    predictors ``token_predictors.*`` and gates ``direction_gates.*`` are new) and:

    Args:
        pruning_layers (Sequence[int], optional): blocks before which tokens are pruned, ascending, in
            [1, depth - 1]. Default: 6, 12, 18 for depth 24, scaled proportionally for other depths.
        keep_ratio (float | Sequence[float], optional): rho: stage s (1-based) keeps ``int(rho^s * N)`` of the N
            patch tokens; or one fraction of N per stage (non-increasing). Default: 0.9 for arch 'tiny', 0.7
            otherwise (the DyVM scripts' Vim-T and Vim-S/B values).
        block_selection (bool): gate each block's scan directions per sample. Default: True.
        gate_threshold (float): at inference a direction runs when sigmoid(gate logit) > this. Default: 0.5.
        gumbel_tau (float): temperature of the training-time Gumbel draws. Default: 1.

    In training, ``forward`` runs the masked path with random decisions (:meth:`forward_masked`); in evaluation the
    gathered path (top-k tokens, thresholded gates), whose cost the FLOP counter sees per stage length.

    Outputs: ``out_type`` 'cls_token' as Vim; 'featmap' / 'raw' are restored to full length in the original token
    order: a kept token has its features, a pruned one its residual stream from the block before which it was
    pruned (through the final norm for the last block), as :class:`ToPVim`. 'mean' / 'max' pooling,
    ``feature_source='mixer'``, RoPE, no class token, ``conv_type='inverted_residual'`` and SE are not supported
    (the masked path would not equal the gathered one).
    """

    def __init__(self, arch='tiny', pruning_layers=None, keep_ratio=None, block_selection=True, gate_threshold=0.5,
                 gumbel_tau=1.0, **kwargs):
        super().__init__(arch=arch, **kwargs)
        self._check_supported()
        if pruning_layers is None:
            if self.depth < 2:
                raise ValueError(f'DyVim: depth {self.depth} has no block to prune tokens before; use depth >= 2.')
            pruning_layers = default_pruning_layers(self.depth)
        layers = tuple(pruning_layers) if isinstance(pruning_layers, Sequence) else (pruning_layers,)
        if not layers or any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i < self.depth for i in layers) \
                or list(layers) != sorted(set(layers)):
            raise ValueError(f'DyVim: pruning_layers must be ascending distinct block indices in [1, {self.depth - 1}] '
                             f'(tokens are pruned before those blocks), got {pruning_layers!r}.')
        if keep_ratio is None:
            keep_ratio = DEFAULT_KEEP_RATIO.get(arch, DEFAULT_KEEP_RATIO_OTHERS) if isinstance(arch, str) \
                else DEFAULT_KEEP_RATIO_OTHERS
        if isinstance(keep_ratio, Sequence) and not isinstance(keep_ratio, str):
            ratios = tuple(float(r) for r in keep_ratio)
            if len(ratios) != len(layers) or any(b > a for a, b in zip(ratios, ratios[1:])):
                raise ValueError(f'DyVim: a keep_ratio sequence needs one non-increasing fraction of the patch tokens '
                                 f'per pruning layer ({len(layers)}: {layers}), got {keep_ratio!r}.')
        elif isinstance(keep_ratio, (int, float)) and not isinstance(keep_ratio, bool):
            ratios = tuple(float(keep_ratio) ** stage for stage in range(1, len(layers) + 1))
        else:
            raise ValueError(f'DyVim: keep_ratio must be a number or a sequence of numbers, got {keep_ratio!r}.')
        if any(not 0 < r <= 1 for r in ratios):
            raise ValueError(f'DyVim: keep ratios must be in (0, 1], got {keep_ratio!r}; e.g. keep_ratio=0.7 keeps '
                             '0.7, 0.49 and 0.343 of the patch tokens at three stages.')
        if not 0 < gate_threshold < 1:
            raise ValueError(f'DyVim: gate_threshold must be in (0, 1), got {gate_threshold!r}.')
        if not gumbel_tau > 0:
            raise ValueError(f'DyVim: gumbel_tau must be > 0, got {gumbel_tau!r}.')
        self.pruning_layers, self.keep_ratios = layers, ratios
        self._stage_of = {layer: stage for stage, layer in enumerate(layers)}
        self.gumbel_tau = float(gumbel_tau)
        self.gate_logit_threshold = math.log(gate_threshold / (1 - gate_threshold))
        self.num_directions = 2 if self.layers[0].mixer.bidirectional else 1
        self.token_predictors = nn.ModuleList(TokenKeepPredictor(self.embed_dims) for _ in layers)
        self.direction_gates = nn.ModuleList(
            nn.Linear(self.embed_dims, self.num_directions) for _ in range(self.depth)) if block_selection else None
        self.reset_dyvm_parameters()

    def _check_supported(self):
        unsupported = []
        if self.embed_dims < 4:
            unsupported.append(f'embed_dims={self.embed_dims} (the predictor narrows to embed_dims // 4; use >= 4)')
        if self.cls_token_position == 'none':
            unsupported.append("cls_token='none' (the gates read the class token; use 'middle')")
        if self.rope is not None:
            unsupported.append('rope=True (tokens move between slots; use rope=False)')
        if self.out_type in ('mean', 'max'):
            unsupported.append(f"out_type={self.out_type!r} (use 'cls_token', 'featmap' or 'raw')")
        if self.feature_source != 'stream':
            unsupported.append("feature_source='mixer' (a pruned token has no mixer output; use 'stream')")
        mixer = self.layers[0].mixer
        if mixer.conv_type != 'conv':
            unsupported.append(f"conv_type={mixer.conv_type!r} (its pointwise layers turn a pruned token's zeros "
                               "into non-zero padding; use 'conv')")
        if mixer.se is not None:
            unsupported.append('se_ratio (the squeeze-excitation pools over pruned tokens too; use se_ratio=None)')
        if unsupported:
            raise ValueError('DyVim does not support ' + '; '.join(unsupported) + '.')

    @torch.no_grad()
    def reset_dyvm_parameters(self):
        """Predictors: truncated normal (std 0.02) linears with zero bias, as DynamicViT's; gates: weight 0 and
        bias GATE_INIT_LOGIT, every direction on."""
        for module in self.token_predictors.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                nn.init.zeros_(module.bias)
        for gate in self.direction_gates or []:
            nn.init.zeros_(gate.weight)
            nn.init.constant_(gate.bias, GATE_INIT_LOGIT)

    def init_weights(self):
        super().init_weights()
        loaded = any(isinstance(cfg, dict) and cfg.get('type') == 'Pretrained' and cfg.get('checkpoint')
                     for cfg in self._init_cfgs())
        if not loaded:  # an init_cfg of the backbone (e.g. Linear layers) must not undo the gates' start
            self.reset_dyvm_parameters()

    def num_kept(self, stage: int, num_patches: int) -> int:
        """Patch tokens kept at ``stage`` (0-based) of a sequence of ``num_patches``: int(ratio * N)."""
        count = int(self.keep_ratios[stage] * num_patches)
        if count < 1:
            raise ValueError(f'DyVim: stage {stage + 1} keeps int({self.keep_ratios[stage]:.4g} * {num_patches}) = 0 '
                             'patch tokens; raise keep_ratio or use a larger input.')
        return count

    # ------------------------------------------------------------------ shared pieces of both paths
    def _gate(self, index, normed, cls_at, stochastic):
        """(batch, directions) gate of block ``index`` from the class token's normed features, or None."""
        if self.direction_gates is None:
            return None
        cls = normed[torch.arange(normed.shape[0], device=normed.device), cls_at]
        logits = self.direction_gates[index](cls).float()
        if not stochastic:
            return (logits > self.gate_logit_threshold).float()
        uniform = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logits + torch.log(uniform) - torch.log1p(-uniform)) / self.gumbel_tau)
        return straight_through(soft > 0.5, soft)

    def _block(self, index, hidden, residual, cls_at, mask, stochastic):
        """VimBlock.forward with the block's gate, and in the masked path the pruned slots' mixer input and output
        zeroed (``mask``: (batch, L) 1 kept / 0 pruned, carrying the decisions' straight-through gradient)."""
        layer = self.layers[index]
        hidden = layer.drop_path(hidden) if residual is not None else hidden
        normed, residual = add_norm(hidden, residual, layer.norm, layer.residual_in_fp32, layer.fused_add_norm)
        gate = self._gate(index, normed, cls_at, stochastic)
        if mask is None:
            return layer.mixer(normed, direction_gate=gate), residual, gate
        weight = mask.unsqueeze(-1).to(normed.dtype)
        hidden = layer.mixer(normed * weight, keep_mask=mask > 0.5, direction_gate=gate)
        return hidden * weight.to(hidden.dtype), residual, gate

    def _run_block(self, index, hidden, residual, cls_at, mask, stochastic):
        if self.with_cp and hidden.requires_grad:
            return cp.checkpoint(self._block, index, hidden, residual, cls_at, mask, stochastic, use_reentrant=False)
        return self._block(index, hidden, residual, cls_at, mask, stochastic)

    def _features(self, index, hidden, residual):
        if index == self.depth - 1:
            return add_norm(self.final_drop_path(hidden), residual, self.norm_f, self.residual_in_fp32,
                            self.fused_add_norm)[0]
        return residual + hidden

    def _output(self, features, positions, cls_at, grid, cls_index, fill):
        """One output from the features of the current slots: the class token's, or the tokens restored to the
        original order and full length (``fill``: (batch, L, C) values of the slots no token holds)."""
        if self.out_type == 'cls_token':
            return features[torch.arange(features.shape[0], device=features.device), cls_at]
        base = features if fill is None else fill
        return self._format(scatter_tokens(base, positions, features), grid, cls_index)

    def _norm_fill(self, index, dropped):
        if dropped is None or index != self.depth - 1:
            return dropped
        return self.norm_f(dropped.to(self.norm_f.weight.dtype))

    # ------------------------------------------------------------------ inference: gathered
    def forward(self, x: torch.Tensor):
        if self.training:
            return self.forward_masked(x)['outputs']
        return self.forward_gathered(x)

    def forward_gathered(self, x: torch.Tensor):
        """Inference: at each stage the kept block (top-k patch tokens in original order, the class token in its
        middle) is cut out and the following blocks run on it; gates thresholded. Returns Vim's output tuple."""
        hidden, grid, cls_index = self.embed(x)
        residual, (batch, length) = None, hidden.shape[:2]
        positions = torch.arange(length, device=hidden.device).expand(batch, -1)
        cls_at = torch.full((batch,), cls_index, device=hidden.device)
        dropped = None  # the stream of every position when it was pruned, full length (dense outputs)
        outs = {}
        for index in range(self.depth):
            if index in self._stage_of:
                stage = self._stage_of[index]
                stream = residual + hidden
                slots = _patch_slots(cls_at, hidden.shape[1])
                logits = self.token_predictors[stage](gather_tokens(stream, slots))
                kept = keep_score(logits).topk(self.num_kept(stage, length - 1), dim=1).indices.sort(dim=1).values
                new_cls_at = self._cls_slot(torch.full_like(cls_at, kept.shape[1]))
                order = _insert(slots.gather(1, kept), cls_at, new_cls_at)
                if self.out_type in DENSE_OUT_TYPES:
                    stream = stream.to(hidden.dtype)
                    dropped = stream if dropped is None else scatter_tokens(dropped, positions, stream)
                hidden, residual = gather_tokens(hidden, order), gather_tokens(residual, order)
                positions, cls_at = positions.gather(1, order), new_cls_at
            hidden, residual, _ = self._run_block(index, hidden, residual, cls_at, None, False)
            if index in self.out_indices:
                outs[index] = self._output(self._features(index, hidden, residual), positions, cls_at, grid,
                                           cls_index, self._norm_fill(index, dropped))
        return tuple(outs[index] for index in self.out_indices)

    def _cls_slot(self, num_kept):
        return num_kept // 2 if self.cls_token_position == 'middle' else torch.zeros_like(num_kept)

    # ------------------------------------------------------------------ training: masked, full length
    def forward_masked(self, x: torch.Tensor, stochastic: bool | None = None) -> dict:
        """The full-length masked forward (training): pruned tokens rearranged behind the kept block and masked.

        Args:
            x: (batch, 3, H, W) images.
            stochastic: Gumbel draws for the keep decisions and gates (default: ``self.training``); False takes
                the inference rules (top-k, thresholds), for which the outputs equal :meth:`forward_gathered`'s.

        Returns:
            dict with ``outputs`` (Vim's output tuple), ``tokens`` (batch, L, C) the last block's normed features
            per slot, ``positions`` (batch, L) the original index of each slot's token, ``keep`` (batch, L) bool
            (False: pruned), ``cls_at`` (batch,) the class token's slot, ``decisions`` a list per stage of
            (batch, N) 0/1 keep decisions of the N patch tokens (in slot order; straight-through gradient),
            ``keep_ratios`` their targets, and ``gates`` (batch, depth, directions) (None without block selection).
        """
        stochastic = self.training if stochastic is None else stochastic
        hidden, grid, cls_index = self.embed(x)
        residual, (batch, length) = None, hidden.shape[:2]
        positions = torch.arange(length, device=hidden.device).expand(batch, -1)
        cls_at = torch.full((batch,), cls_index, device=hidden.device)
        mask, decisions, gates, outs = None, [], [], {}
        for index in range(self.depth):
            if index in self._stage_of:
                hidden, residual, positions, cls_at, mask, decision = self._prune_masked(
                    self._stage_of[index], hidden, residual, positions, cls_at, mask, stochastic)
                decisions.append(decision)
            hidden, residual, gate = self._run_block(index, hidden, residual, cls_at, mask, stochastic)
            if gate is not None:
                gates.append(gate)
            if index in self.out_indices:
                features = self._features(index, hidden, residual)
                outs[index] = self._output(features, positions, cls_at, grid, cls_index, None)
        last = self.depth - 1
        tokens = features if last in self.out_indices else self._features(last, hidden, residual)
        keep = torch.ones(batch, length, dtype=torch.bool, device=hidden.device) if mask is None else mask > 0.5
        return dict(outputs=tuple(outs[index] for index in self.out_indices), tokens=tokens, positions=positions,
                    keep=keep, cls_at=cls_at, decisions=decisions, keep_ratios=self.keep_ratios,
                    gates=torch.stack(gates, dim=1) if gates else None)

    def _prune_masked(self, stage, hidden, residual, positions, cls_at, mask, stochastic):
        length = hidden.shape[1]
        slots = _patch_slots(cls_at, length)
        policy = None if mask is None else mask.gather(1, slots)
        logits = self.token_predictors[stage](gather_tokens(residual + hidden, slots), policy)
        if stochastic:
            gumbels = -torch.empty_like(logits, dtype=torch.float32).exponential_().log()
            soft = ((logits.float() + gumbels) / self.gumbel_tau).softmax(-1)[..., 0]
            keep = straight_through(soft > 0.5, soft)
            keep = keep if policy is None else keep * policy
        else:
            score = keep_score(logits)  # ranked in the dtype of the gathered path, which it must match
            if policy is not None:
                score = score.masked_fill(policy <= 0.5, float('-inf'))
            top = score.topk(self.num_kept(stage, length - 1), dim=1).indices
            keep = torch.zeros_like(score).scatter(1, top, 1.0)
        kept = keep.detach() > 0.5
        # kept first in their current order (the original one), pruned behind; the class token in the kept middle
        order = torch.sort((~kept).to(torch.uint8), dim=1, stable=True).indices
        new_cls_at = self._cls_slot(kept.sum(1))
        slot_order = _insert(slots.gather(1, order), cls_at, new_cls_at)
        new_mask = _insert(keep.gather(1, order), torch.ones_like(keep[:, 0]), new_cls_at)
        return (gather_tokens(hidden, slot_order), gather_tokens(residual, slot_order), positions.gather(1, slot_order),
                new_cls_at, new_mask, keep)

