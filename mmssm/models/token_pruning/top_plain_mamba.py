"""ToP-ViM token pruning on PlainMamba (importance, selection and schedule of :mod:`.top`).

After a pruning layer the following layers run on the kept tokens only (kept in raster order):

* in_proj, x_proj, dt_proj, out_proj, the norms and the residual act on the kept tokens;
* the 2-D depthwise conv (and a layer's dw conv-BN-GELU on the stream) needs a grid: the kept tokens are scattered
  onto a zero grid, convolved and gathered back, so a pruned position reads as zeros (and its conv output is
  dropped; in training BN's batch statistics include those zeros);
* each of the four zig-zag scans runs over the kept tokens in its own order (a per-sample sort of the kept tokens
  by their rank in that order) with ``gap_steps`` = the pruned tokens that order skips before each kept token: the
  scan's hidden-state alignment (a pruned step only decays the state, with the next kept step's delta);
* direction-aware B: each token keeps the direction code of the move that reached it in the full grid's order (a
  jump over pruned tokens is no 4-neighbour move, so no code would fit it; the token's own code keeps the learned
  tokens' meaning);
* PlainMamba reads delta, B and C in raster order at every scan step (step t of each scan uses raster token t's,
  see :mod:`mmssm.models.backbones.plain_mamba`); on the kept tokens step j uses the j-th kept token's, the same
  rule on the compacted sequence, so that nothing pruned is exactly PlainMamba.

Dense outputs ('featmap', the segmentation method): the kept tokens are scattered back onto the full grid and a
pruned position holds its residual stream from the layer where it was pruned, then the output norm applies to
every position. 'avg_featmap' averages the kept tokens.
"""
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp

from mmssm.registry import MODELS

from ..backbones.plain_mamba import PlainMamba, zigzag_orders
from .common import gather_tokens, scatter_tokens
from .top import gap_counts, select_tokens, token_importance


def _scatter_to_grid(tokens, positions, length):
    """(batch, K, C) kept tokens at raster ``positions`` (batch, K) -> (batch, length, C), zeros elsewhere."""
    return scatter_tokens(tokens.new_zeros(tokens.shape[0], length, tokens.shape[-1]), positions, tokens)


def scan_plan(positions: torch.Tensor, grid: tuple) -> dict:
    """How the four zig-zag scans visit the kept tokens: positions (batch, K) ascending raster indices ->
    dict of (4, batch, K) tensors: ``order`` (compact index of each scan's j-th kept token), ``inverse`` (undoes
    it), ``directions`` (each token's direction code in the full grid's order) and ``gaps`` (float, pruned tokens
    skipped before it in that order)."""
    orders, inverse, directions = (t.to(positions.device) for t in zigzag_orders(*grid))
    length = orders.shape[1]
    ranks, order = inverse[:, positions].sort(dim=-1)  # (4, batch, K): rank of each kept token in each order
    four, batch, kept = ranks.shape
    codes = directions.gather(1, ranks.reshape(four, -1)).reshape(four, batch, kept)
    gaps = gap_counts(ranks.reshape(four * batch, kept), length)[0].reshape(four, batch, kept)
    return dict(order=order, inverse=order.argsort(dim=-1), directions=codes, gaps=gaps)


def pruned_mixer(mixer, x: torch.Tensor, grid: tuple, positions: torch.Tensor, plan: dict) -> torch.Tensor:
    """PlainMambaMixer.forward on the kept tokens x (batch, K, C) at raster ``positions`` (see the module
    docstring)."""
    batch, kept, _ = x.shape
    d_inner, length = mixer.d_inner, grid[0] * grid[1]
    x, z = mixer.in_proj(x).chunk(2, dim=-1)
    x = mixer.conv(_scatter_to_grid(x, positions, length), grid)  # (batch, d_inner, L)
    x = x.gather(2, positions.unsqueeze(1).expand(-1, d_inner, -1))  # (batch, d_inner, K)
    dt, B, C = mixer.ssm_inputs(x)
    order = plan['order'].unsqueeze(2).expand(-1, -1, d_inner, -1)  # (4, batch, d_inner, K)
    u = x.unsqueeze(0).expand(4, -1, -1, -1).gather(3, order).reshape(4 * batch, d_inner, kept)
    dir_B = mixer.direction_Bs[plan['directions']].transpose(2, 3).to(B.dtype)  # (4, batch, N, K)
    B4 = (B.unsqueeze(0) + dir_B).reshape(4 * batch, mixer.d_state, kept)
    y = mixer.scan(u, dt.repeat(4, 1, 1), B4, C.repeat(4, 1, 1), gap_steps=plan['gaps'].reshape(4 * batch, kept))
    y = y.reshape(4, batch, d_inner, kept)
    y = torch.gather(y, 3, plan['inverse'].unsqueeze(2).expand_as(y)).sum(0)  # back to compact raster order
    return mixer.out_proj(y.transpose(1, 2) * F.silu(z))


def pruned_dwconv(dw, x: torch.Tensor, grid: tuple, positions: torch.Tensor) -> torch.Tensor:
    """A layer's dw conv-BN-GELU on the kept tokens x (batch, K, C): on a zero grid, gathered back."""
    batch, _, channels = x.shape
    full = _scatter_to_grid(x, positions, grid[0] * grid[1]).transpose(1, 2).reshape(batch, channels, *grid)
    full = dw(full).flatten(2)
    return full.gather(2, positions.unsqueeze(1).expand(-1, channels, -1)).transpose(1, 2)


@MODELS.register_module()
class ToPPlainMamba(PlainMamba):
    """PlainMamba with ToP-ViM token pruning: ``token_pruning=dict(type='mmssm.ToP', layers=(...),
    keep_ratio=...)`` and every argument of :class:`PlainMamba` (same parameters, so its checkpoints load).

    How the pruned layers run and how dense outputs are restored: see the module docstring. Needs the zoh
    discretization (the gap form of the alignment is exact there).
    """

    def __init__(self, *args, token_pruning=None, **kwargs):
        super().__init__(*args, **kwargs)
        if token_pruning is None:
            raise ValueError("ToPPlainMamba: token_pruning is required, e.g. dict(type='mmssm.ToP', layers=(9, 18, "
                             "27), keep_ratio=0.54); use mmssm.PlainMamba for the dense model.")
        self.token_pruning = MODELS.build(token_pruning) if isinstance(token_pruning, dict) else token_pruning
        if max(self.token_pruning.layers) >= self.depth:
            raise ValueError(f'ToPPlainMamba: pruning layers {self.token_pruning.layers} must be < depth '
                             f'{self.depth}.')
        if self.discretization != 'zoh':
            raise ValueError(f"ToPPlainMamba: the hidden-state alignment needs discretization='zoh', got "
                             f'{self.discretization!r}.')

    @staticmethod
    def _layer(layer, x, grid, positions, plan):
        """PlainMambaLayer.forward, on the kept tokens when ``positions`` is given; also returns the mixer output
        (the importance's input)."""
        normed = layer.norm(x)
        mixed = layer.mixer(normed, grid) if positions is None else pruned_mixer(layer.mixer, normed, grid,
                                                                                 positions, plan)
        x = x + layer.drop_path(mixed)
        if layer.dw is not None:
            if positions is None:
                batch, _, channels = x.shape
                x = layer.dw(x.transpose(1, 2).reshape(batch, channels, *grid)).flatten(2).transpose(1, 2)
            else:
                x = pruned_dwconv(layer.dw, x, grid, positions)
        return x, mixed

    def forward(self, x):
        x, grid = self.embed(x)
        batch = x.shape[0]
        pruning = self.token_pruning.active(self.training)
        positions, plan, dropped = None, None, None  # dropped: the stream of the pruned tokens at full length
        outs, last = [], self.depth - 1
        for index, layer in enumerate(self.layers):
            if self.with_cp and x.requires_grad:
                x, mixed = cp.checkpoint(self._layer, layer, x, grid, positions, plan, use_reentrant=False)
            else:
                x, mixed = self._layer(layer, x, grid, positions, plan)
            if index in self.out_indices:
                stream = x
                if dropped is not None and self.out_type == 'featmap':
                    stream = scatter_tokens(dropped, positions, x)
                out = (self.norm_f if index == last else self.out_norms[str(index)])(stream)
                if self.out_type == 'avg_featmap':
                    outs.append(out.mean(dim=1))
                else:
                    outs.append(out.transpose(1, 2).reshape(batch, self.embed_dims, *grid))
            if pruning and index in self.token_pruning.keep_ratios and index != last:
                keep = select_tokens(token_importance(mixed), self.token_pruning.keep_ratios[index])
                if keep.shape[1] == x.shape[1]:  # keeps every token: nothing to prune
                    continue
                if self.out_type == 'featmap':
                    dropped = x if dropped is None else scatter_tokens(dropped, positions, x)
                x = gather_tokens(x, keep)
                positions = keep if positions is None else positions.gather(1, keep)
                plan = scan_plan(positions, grid)
        return tuple(outs)
