"""PlainMamba: a plain (non-hierarchical) Mamba with 2-D depthwise convolution and four zig-zag scans
(Yang et al., BMVC 2024, "PlainMamba: Improving Non-Hierarchical Mamba in Visual Recognition").

Matches the official model (ChenhongyiYang/PlainMamba) so that its checkpoints load through
:mod:`mmssm.converters.plainmamba`, including two details of that code that a re-derivation would not give:

* the four scans share ``x_proj``/``dt_proj``/``A``/``D`` and only the input ``u`` is read in scan order:
  ``delta``, ``B`` and ``C`` stay in raster order (position t of every scan uses raster token t's);
* ``dt_proj``'s bias is added twice (once by the linear layer, once as the scan's ``delta_bias``).

The direction-aware update adds a learned token ``direction_Bs[k]`` (k: 0 start, 1 right, 2 left, 3 up, 4 down:
the move that reached the scan's t-th token) to ``B`` at step t.
"""
import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit, trunc_normal_
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmssm.ops.selective_scan import METHODS, selective_scan
from mmssm.registry import MODELS

from ..layers import resize_pos_embed

OUT_TYPES = ('featmap', 'avg_featmap')
# direction codes of the official model: the move that reached a token
START, RIGHT, LEFT, UP, DOWN = range(5)


def _snake(rows, cols, transpose):
    """Boustrophedon order over a rows x cols grid: along rows (or along columns when ``transpose``)."""
    order = []
    outer, inner = (cols, rows) if transpose else (rows, cols)
    for a in range(outer):
        line = range(inner) if a % 2 == 0 else range(inner - 1, -1, -1)
        order.extend((b * cols + a) if transpose else (a * cols + b) for b in line)
    return order


@lru_cache(maxsize=32)
def zigzag_orders(rows: int, cols: int):
    """The four continuous scan orders of PlainMamba over a rows x cols grid of raster-ordered tokens.

    Returns (orders, inverse, directions), each a (4, rows*cols) LongTensor: ``orders[k, t]`` is the raster index
    of scan k's t-th token, ``inverse`` undoes it, ``directions[k, t]`` the code (0 start, 1 right, 2 left, 3 up,
    4 down) of the move that reached it. Scans: row snake from the top-left, its reverse, column snake from the
    top-left, its reverse. Cached per grid size.
    """
    row_snake, col_snake = _snake(rows, cols, False), _snake(rows, cols, True)
    orders = torch.tensor([row_snake, row_snake[::-1], col_snake, col_snake[::-1]], dtype=torch.long)
    r, c = orders // cols, orders % cols
    dr, dc = r[:, 1:] - r[:, :-1], c[:, 1:] - c[:, :-1]
    moves = torch.full_like(dr, -1)
    for code, (vr, vc) in ((RIGHT, (0, 1)), (LEFT, (0, -1)), (UP, (-1, 0)), (DOWN, (1, 0))):
        moves[(dr == vr) & (dc == vc)] = code
    assert (moves >= 0).all(), 'zig-zag orders must be continuous'
    directions = torch.cat([torch.full((4, 1), START, dtype=torch.long), moves], dim=1)
    return orders, torch.argsort(orders, dim=1), directions


class ConvPatchEmbed(nn.Module):
    """PlainMamba's stem: 7x7/2 conv-BN-ReLU to 64 channels, ``num_convs`` 3x3 conv-BN-ReLU, then a
    (patch/2)x(patch/2) conv with stride patch/2 after padding the bottom/right to a multiple of it."""

    def __init__(self, in_channels, embed_dims, patch_size, num_convs, stem_channels=64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_channels, 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True))
        convs = []
        for _ in range(num_convs):
            convs += [nn.Conv2d(stem_channels, stem_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_channels),
                      nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*convs) if convs else None
        self.kernel = patch_size // 2
        self.projection = nn.Conv2d(stem_channels, embed_dims, self.kernel, self.kernel)

    def grid(self, size):
        return tuple(math.ceil(((s - 1) // 2 + 1) / self.kernel) for s in size)

    def forward(self, x):
        x = self.stem(x)
        if self.convs is not None:
            x = self.convs(x)
        pad_h, pad_w = (-x.shape[-2]) % self.kernel, (-x.shape[-1]) % self.kernel
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.projection(x)
        return x.flatten(2).transpose(1, 2), tuple(x.shape[-2:])


class PlainMambaMixer(nn.Module):
    """PlainMamba's 2-D selective-scan mixer: in_proj -> 7x7 depthwise conv + SiLU -> four zig-zag scans (one
    batched scan call, the directions stacked along the batch) summed -> gate silu(z) -> out_proj."""

    def __init__(self, embed_dims, d_state=16, expand=2, conv_size=7, bias=True, conv_bias=True,
                 dt_min=1e-3, dt_max=0.1, dt_init_floor=1e-4, discretization='zoh', scan_backend='auto'):
        super().__init__()
        if conv_size % 2 != 1:
            raise ValueError(f'PlainMamba: conv_size must be odd (same padding), got {conv_size!r}.')
        self.d_inner, self.d_state = int(expand * embed_dims), d_state
        self.dt_rank = math.ceil(embed_dims / 16)
        self.discretization, self.scan_backend = discretization, scan_backend
        self.in_proj = nn.Linear(embed_dims, 2 * self.d_inner, bias=bias)
        self.conv2d = nn.Conv2d(self.d_inner, self.d_inner, conv_size, padding=conv_size // 2,
                                groups=self.d_inner, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        # dt bias: inverse softplus of a log-uniform step in [dt_min, dt_max], so initial steps span time scales
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real A: -(1..N) per channel, a spread of decay rates
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(
            self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, embed_dims, bias=bias)
        self.direction_Bs = nn.Parameter(torch.zeros(5, d_state))
        trunc_normal_(self.direction_Bs, std=0.02)

    def conv(self, x, grid):
        """Depthwise 2-D conv + SiLU of raster tokens (batch, L, d_inner) on a ``grid`` -> (batch, d_inner, L)."""
        x = x.transpose(1, 2).reshape(x.shape[0], self.d_inner, *grid)
        return F.silu(self.conv2d(x)).flatten(2)

    def ssm_inputs(self, x):
        """delta (before delta_bias and softplus), B and C of tokens x (batch, d_inner, L): (batch, d_inner, L),
        (batch, N, L), (batch, N, L)."""
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self.dt_proj(dt).transpose(1, 2)  # bias included here and again as delta_bias, as the official model
        return dt, B.transpose(1, 2), C.transpose(1, 2)

    def scan(self, u, dt, B, C, gap_steps=None):
        """The selective scan with this mixer's A, D and dt bias; ``gap_steps`` as in ``selective_scan``."""
        fp = torch.promote_types(u.dtype, torch.float32)  # A, D, dt bias at least float32, as in Mamba
        return selective_scan(u, dt, -torch.exp(self.A_log.to(fp)), B, C, self.D.to(fp),
                              delta_bias=self.dt_proj.bias.to(fp), delta_softplus=True,
                              discretization=self.discretization, backend=self.scan_backend, gap_steps=gap_steps)

    def forward(self, x, grid):
        batch, length, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = self.conv(x, grid)  # (batch, d_inner, L), raster order
        dt, B, C = self.ssm_inputs(x)
        orders, inverse, directions = (t.to(x.device) for t in zigzag_orders(*grid))
        u = x[:, :, orders].permute(2, 0, 1, 3).reshape(4 * batch, self.d_inner, length)  # direction-major
        dir_B = self.direction_Bs[directions].transpose(1, 2).to(B.dtype)  # (4, N, L)
        B4 = (B.unsqueeze(0) + dir_B.unsqueeze(1)).reshape(4 * batch, self.d_state, length)
        y = self.scan(u, dt.repeat(4, 1, 1), B4, C.repeat(4, 1, 1))
        y = y.reshape(4, batch, self.d_inner, length)
        y = torch.gather(y, 3, inverse[:, None, None, :].expand_as(y)).sum(0)  # back to raster order
        return self.out_proj(y.transpose(1, 2) * F.silu(z))


class PlainMambaLayer(nn.Module):
    """Pre-norm residual mixer; optionally followed by a 3x3 depthwise conv-BN-GELU on the stream (L1's first
    layer)."""

    def __init__(self, embed_dims, mixer_cfg, norm_eps, drop_path, with_dwconv):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mixer = PlainMambaMixer(embed_dims, **mixer_cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.dw = nn.Sequential(nn.Conv2d(embed_dims, embed_dims, 3, padding=1, groups=embed_dims, bias=False),
                                nn.BatchNorm2d(embed_dims), nn.GELU()) if with_dwconv else None

    def forward(self, x, grid):
        x = x + self.drop_path(self.mixer(self.norm(x), grid))
        if self.dw is not None:
            batch, _, channels = x.shape
            x = self.dw(x.transpose(1, 2).reshape(batch, channels, *grid)).flatten(2).transpose(1, 2)
        return x


@MODELS.register_module()
class PlainMamba(BaseModule):
    """PlainMamba backbone for classification and dense prediction (no class token).

    Args:
        arch (str | dict): 'l1', 'l2', 'l3' (the paper's models) or 'test' (tiny, for unit tests), or a dict with
            ``embed_dims``, ``depth`` and optionally ``num_convs_patch_embed``, ``layers_with_dwconv``,
            ``d_state``, ``expand``, ``conv_size``.
        img_size (int | tuple): training input size; sets the position embedding's grid. Default: 224.
        patch_size (int): total stride of the patch embedding (even). Default: 16.
        in_channels (int): image channels. Default: 3.
        out_indices (int | Sequence[int]): layers whose output is returned; -1 is the last. The last layer's goes
            through the final norm, every other one through its own LayerNorm (as the official model). Default: -1.
        out_type (str): 'featmap' (NCHW maps) or 'avg_featmap' (mean over tokens, (B, C): the official
            classifier's pooling). Default: 'avg_featmap'.
        frozen_stages (int): -1 freezes nothing; 0 the patch embedding and position embedding; k > 0 also the
            first k layers (k = depth also the final norm).
        norm_eval (bool): keep the batch norms (stem, L1's depthwise conv) in eval mode while training.
        drop_rate (float): dropout after the position embedding. Default: 0.
        drop_path_rate (float): stochastic depth, rising linearly from 0 over the layers. Default: 0.
        with_pos_embed (bool): learned absolute position embedding (resized on the fly). Default: True.
        norm_eps (float): eps of the layers' LayerNorms (the official model uses PyTorch's default). Default: 1e-5.
        final_norm_eps (float): eps of the final and output LayerNorms. Default: 1e-6.
        discretization (str): the selective scan's method; 'zoh' loads the official weights. Default: 'zoh'.
        scan_backend (str): backend of the selective scan. Default: 'auto'.
        with_cp (bool): activation checkpointing of each layer.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint=...)`` with a checkpoint converted by
            ``tools/model_converters/plainmamba2mmssm.py``; ``checkpoint=None`` trains from scratch.
    """

    arch_zoo = {
        'l1': dict(embed_dims=192, depth=24, num_convs_patch_embed=1, layers_with_dwconv=(0, )),
        'l2': dict(embed_dims=384, depth=24, num_convs_patch_embed=2, layers_with_dwconv=()),
        'l3': dict(embed_dims=448, depth=36, num_convs_patch_embed=2, layers_with_dwconv=()),
        'test': dict(embed_dims=32, depth=2, num_convs_patch_embed=1, layers_with_dwconv=(0, ), d_state=4,
                     conv_size=3),
    }
    arch_keys = ('embed_dims', 'depth', 'num_convs_patch_embed', 'layers_with_dwconv', 'd_state', 'expand',
                 'conv_size')

    def __init__(self, arch='l1', img_size=224, patch_size=16, in_channels=3, out_indices=-1,
                 out_type='avg_featmap', frozen_stages=-1, norm_eval=False, drop_rate=0., drop_path_rate=0.,
                 with_pos_embed=True, norm_eps=1e-5, final_norm_eps=1e-6, discretization='zoh', scan_backend='auto',
                 with_cp=False, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        settings = self._parse_arch(arch)
        self.embed_dims, self.depth = settings['embed_dims'], settings['depth']
        self.num_layers = self.depth
        if discretization not in METHODS:
            raise ValueError(f'PlainMamba: unknown discretization {discretization!r}; choose one of {METHODS}.')
        if out_type not in OUT_TYPES:
            raise ValueError(f'PlainMamba: out_type must be one of {OUT_TYPES}, got {out_type!r}.')
        if not isinstance(patch_size, int) or patch_size < 2 or patch_size % 2:
            raise ValueError(f'PlainMamba: patch_size must be an even int >= 2 (stem stride 2 times the '
                             f'projection), got {patch_size!r}.')
        if isinstance(img_size, int):
            img_size = (img_size, img_size)
        if not (isinstance(img_size, Sequence) and len(img_size) == 2 and all(isinstance(s, int) and s > 0
                                                                                for s in img_size)):
            raise ValueError(f'PlainMamba: img_size must be a positive int or a pair of them, got {img_size!r}.')
        if not 0 <= drop_rate < 1 or not 0 <= drop_path_rate < 1:
            raise ValueError(f'PlainMamba: drop_rate and drop_path_rate must be in [0, 1), got {drop_rate}, '
                             f'{drop_path_rate}.')
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
            raise ValueError(f'PlainMamba: out_indices must be an int or a non-empty sequence, got '
                             f'{out_indices!r}.')
        self.out_indices = []
        for index in out_indices:
            if not isinstance(index, int) or not -self.depth <= index < self.depth:
                raise ValueError(f'PlainMamba: out_indices entries must be ints in [-{self.depth}, '
                                 f'{self.depth - 1}], got {index!r} in {tuple(out_indices)}.')
            self.out_indices.append(index % self.depth)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= self.depth:
            raise ValueError(f'PlainMamba: frozen_stages must be an int in [-1, {self.depth}], got '
                             f'{frozen_stages!r}.')
        self.out_type, self.frozen_stages, self.norm_eval, self.with_cp = out_type, frozen_stages, norm_eval, with_cp
        self.discretization = discretization

        self.patch_embed = ConvPatchEmbed(in_channels, self.embed_dims, patch_size,
                                          settings.get('num_convs_patch_embed', 1))
        self.train_grid = self.patch_embed.grid(tuple(img_size))
        if with_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, self.train_grid[0] * self.train_grid[1], self.embed_dims))
            trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        self.drop_after_pos = nn.Dropout(drop_rate)
        mixer_cfg = dict(d_state=settings.get('d_state', 16), expand=settings.get('expand', 2),
                         conv_size=settings.get('conv_size', 7), discretization=discretization,
                         scan_backend=scan_backend)
        rates = [drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]
        dwconv = set(settings.get('layers_with_dwconv', ()))
        self.layers = nn.ModuleList([
            PlainMambaLayer(self.embed_dims, mixer_cfg, norm_eps, rates[i], i in dwconv) for i in range(self.depth)
        ])
        self.norm_f = nn.LayerNorm(self.embed_dims, eps=final_norm_eps)
        self.out_norms = nn.ModuleDict({
            str(i): nn.LayerNorm(self.embed_dims, eps=final_norm_eps)
            for i in self.out_indices if i != self.depth - 1
        })
        self._freeze_stages()

    def _parse_arch(self, arch):
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(f'PlainMamba: unknown arch {arch!r}; choose one of {sorted(self.arch_zoo)} or '
                                 f'give a dict with embed_dims and depth.')
            return dict(self.arch_zoo[arch.lower()])
        if isinstance(arch, dict):
            missing = {'embed_dims', 'depth'} - set(arch)
            unknown = set(arch) - set(self.arch_keys)
            if missing or unknown:
                raise ValueError(f'PlainMamba: an arch dict needs embed_dims and depth and may have '
                                 f'{self.arch_keys}; missing {sorted(missing)}, unknown {sorted(unknown)}.')
            return dict(arch)
        raise ValueError(f'PlainMamba: arch must be a name or a dict, got {type(arch).__name__}.')

    def init_weights(self):
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = [cfg for cfg in cfgs if isinstance(cfg, dict) and cfg.get('type') in ('Pretrained',
                                                                                          PretrainedInit)]
        if pretrained and pretrained[0].get('checkpoint') is None:
            print_log('PlainMamba: init_cfg Pretrained has checkpoint=None: training the backbone from scratch.',
                      logger='current')
            given = self.init_cfg
            self.init_cfg = [cfg for cfg in cfgs if cfg is not None and cfg is not pretrained[0]] or None
            try:
                super().init_weights()
            finally:
                self.init_cfg = given
            return
        super().init_weights()

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        modules = [self.patch_embed] + list(self.layers[:self.frozen_stages])
        if self.frozen_stages == self.depth:
            modules.append(self.norm_f)
        for module in modules:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        if self.pos_embed is not None:
            self.pos_embed.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer id for layer-wise lr decay: 0 for the embeddings, i + 1 for layer i, ``depth + 1`` for the norms
        and anything outside the backbone. Returns (layer id, number of ids)."""
        num_layers = self.depth + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name == 'pos_embed' or name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('layers.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    def embed(self, x):
        """Patch embedding + position embedding (resized to the input's grid) + dropout: (tokens, grid)."""
        x, grid = self.patch_embed(x)
        if self.pos_embed is not None:
            pos = self.pos_embed
            if grid != self.train_grid:
                pos = resize_pos_embed(pos, self.train_grid, grid)
            x = x + pos
        return self.drop_after_pos(x), grid

    def forward(self, x):
        x, grid = self.embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(layer, x, grid, use_reentrant=False)
            else:
                x = layer(x, grid)
            if i == self.depth - 1:
                x = self.norm_f(x)
            if i in self.out_indices:
                out = x if i == self.depth - 1 else self.out_norms[str(i)](x)
                if self.out_type == 'avg_featmap':
                    outs.append(out.mean(dim=1))
                else:
                    outs.append(out.transpose(1, 2).reshape(x.shape[0], self.embed_dims, *grid))
        return tuple(outs)
