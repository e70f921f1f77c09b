"""Structured pruning groups: which parameter slices belong to one removable unit (an SSM inner channel, an
attention head, an MLP hidden unit), and which of them must be zero for the unit to be dead.

A unit is *dead* when all its ``kill`` members are zero; removing every member slice of a dead unit then leaves the
model's output unchanged (exactly, not approximately). Pruning hooks zero the kill members; :mod:`.export` removes
the dead units physically.

Kill sets, worked out from the mixers' code:

* :class:`~mmssm.models.layers.MambaMixer` (Vim), channel c of d_inner: x_c goes through the depthwise conv (its
  own channel), then ``x_proj`` reads *all* channels to make dt, B, C for every channel, so x_c must not reach
  ``x_proj`` (column c; and ``x_proj_b`` column c when bidirectional: both directions share in_proj's x channel);
  y_c (scan, D and the z gate of channel c) reaches the output only through ``out_proj`` column c. Kill:
  ``out_proj[:, c]``, ``x_proj[:, c]`` (and ``x_proj_b[:, c]``). Other members: in_proj rows c (x) and
  d_inner + c (z) and their bias, conv1d(_b) weight/bias row c, dt_proj(_b) row c and bias, A_log / A_b_log row
  c, D / D_b entry c. With squeeze-and-excitation (``se_ratio``), y_c also feeds the SE's token mean: kill adds
  ``se.fc1[:, c]``, members ``se.fc2`` row c and bias. With ``conv_type='inverted_residual'``, x_c enters every
  hidden channel through ``expand``: kill adds ``conv1d(_b).expand[:, c]`` (channel c's output is then its own
  residual plus a projection, read by nothing live); members ``project`` row c and ``project_norm``'s entries c
  (its hidden channels are not units).
* :class:`~mmssm.models.layers.MambaVisionMixer` ('s6'): unit c is x channel c *and* z channel c (the halves stay
  equal, as the mixer's ``d_inner`` is split in two). Kill: ``out_proj[:, c]``, ``out_proj[:, half + c]`` and
  ``x_proj[:, c]``. Members: in_proj rows c and half + c, conv1d_x / conv1d_z row c, dt_proj row c and bias,
  A_log row c, D entry c.
* 'S4D' mixer: channels are independent (diagonal per-channel SSM), so kill is ``out_proj[:, c]`` and
  ``out_proj[:, half + c]``; members add log_dt, A_log, A_imag, B row c, C[:, c], D[c].
* 'S5' mixer: x_c enters the shared state through ``B[:, c]``; kill adds ``B[:, c]``; members add C[:, c], D[c].
* :class:`~mmssm.models.layers.self_attention.MultiheadSelfAttention` and the window attentions of
  :mod:`~mmssm.models.layers.window_attention` (shifted, neighbourhood, conv-relative), head h (head_dim d): kill
  ``proj.weight[:, h d:(h+1) d]``; members: the q, k and v rows of ``qkv`` (weight and bias) of that head, and for
  the conv-relative attention the depthwise ``crpe`` rows of its channels. Heads are independent (own softmax or
  factorized context, masks shared), so a head whose output columns are zero can go.
* MLP (``fc1`` -> GELU -> ``fc2``), hidden unit j: kill ``fc2.weight[:, j]``; members ``fc1`` row j and bias.
* MambaVision ``ConvBlock`` (conv1 - BN ``norm1`` - GELU - conv2 - BN - residual), hidden channel c: kill
  ``norm1`` weight and bias c (gamma = beta = 0 makes the BN output 0 in train and eval mode, GELU(0) = 0: the
  network-slimming unit); members ``conv1`` row c and bias, ``norm1`` running mean / var c (buffers), ``conv2``
  input column c. Other BatchNorms (stem, ``norm2``) feed the residual stream and get no group.
* ConvNeXt block (``conv_block='convnext'``: dwconv - LayerNorm - pwconv1 - GELU - pwconv2), hidden unit j of the
  inverted bottleneck: kill ``pwconv2.weight[:, j]``; members ``pwconv1`` row j and bias. Its depthwise conv and
  LayerNorm act on the residual stream's channels and get no group.
"""
from dataclasses import dataclass

from torch import nn

GROUP_KINDS = ('ssm_channel', 'attn_head', 'mlp_hidden', 'conv_channel')


@dataclass(frozen=True)
class Member:
    """Unit i of a group <-> indices ``[offset + i * width, offset + (i + 1) * width)`` along ``dim`` of ``param``.

    ``param`` is the full name in ``model.named_parameters()`` (or ``named_buffers()``: BN running statistics);
    ``kill``: zeroing this slice is what makes the unit dead.
    """
    param: str
    dim: int
    offset: int = 0
    width: int = 1
    kill: bool = False


@dataclass(frozen=True)
class StructuredGroup:
    """``size`` units of one ``kind`` (see ``GROUP_KINDS``) named ``name`` (the owning module's name plus '.d_inner',
    '.heads', '.hidden' or, for a conv block, '.channels')."""
    name: str
    kind: str
    size: int
    members: tuple


def _linear(prefix, module, dim, offset=0, width=1, kill=False):
    """Members for a Linear's weight (and bias when slicing the output dim)."""
    members = [Member(f'{prefix}.weight', dim, offset, width, kill)]
    if dim == 0 and module.bias is not None:
        members.append(Member(f'{prefix}.bias', 0, offset, width, kill))
    return members


def _inverted_residual_members(prefix, block):
    members = [Member(f'{prefix}.expand.weight', 1, kill=True), Member(f'{prefix}.project.weight', 0)]
    norm = dict(block.project_norm.named_parameters())
    norm.update(block.project_norm.named_buffers())
    members += [Member(f'{prefix}.project_norm.{n}', 0) for n, t in norm.items() if t.dim() == 1]
    return members


def _mamba_mixer_group(name, mixer):
    d = mixer.d_inner
    members = _linear(f'{name}.in_proj', mixer.in_proj, 0, 0) + _linear(f'{name}.in_proj', mixer.in_proj, 0, d)
    members += _linear(f'{name}.out_proj', mixer.out_proj, 1, kill=True)
    if mixer.se is not None:
        members += [Member(f'{name}.se.fc1.weight', 1, kill=True)] + _linear(f'{name}.se.fc2', mixer.se.fc2, 0)
    for suffix in ('', '_b') if mixer.bidirectional else ('',):
        conv = getattr(mixer, f'conv1d{suffix}')
        if mixer.conv_type == 'conv':
            members += _linear(f'{name}.conv1d{suffix}', conv, 0)
        else:
            members += _inverted_residual_members(f'{name}.conv1d{suffix}', conv)
        members += _linear(f'{name}.x_proj{suffix}', None, 1, kill=True)
        members += _linear(f'{name}.dt_proj{suffix}', getattr(mixer, f'dt_proj{suffix}'), 0)
        members.append(Member(f"{name}.{'A_log' if suffix == '' else 'A_b_log'}", 0))
        members.append(Member(f'{name}.D{suffix}', 0))
    return StructuredGroup(f'{name}.d_inner', 'ssm_channel', d, tuple(members))


def _split_conv_mixer_group(name, mixer):
    from mmssm.models.layers.mamba_vision_mixer import MambaVisionMixer
    from mmssm.models.layers.s4d import S4DMixer
    from mmssm.models.layers.s5 import S5Mixer
    half = mixer.d_inner // 2
    members = _linear(f'{name}.in_proj', mixer.in_proj, 0, 0) + _linear(f'{name}.in_proj', mixer.in_proj, 0, half)
    members += [Member(f'{name}.out_proj.weight', 1, 0, 1, True), Member(f'{name}.out_proj.weight', 1, half, 1, True)]
    members += _linear(f'{name}.conv1d_x', mixer.conv1d_x, 0) + _linear(f'{name}.conv1d_z', mixer.conv1d_z, 0)
    if isinstance(mixer, MambaVisionMixer):
        members += [Member(f'{name}.x_proj.weight', 1, kill=True)] + _linear(f'{name}.dt_proj', mixer.dt_proj, 0)
        members += [Member(f'{name}.A_log', 0), Member(f'{name}.D', 0)]
    elif isinstance(mixer, S4DMixer):
        members += [Member(f'{name}.{p}', 0) for p in ('log_dt', 'A_log', 'A_imag', 'B', 'D')]
        members.append(Member(f'{name}.C', 1))
    elif isinstance(mixer, S5Mixer):
        members += [Member(f'{name}.B', 1, kill=True), Member(f'{name}.C', 1), Member(f'{name}.D', 0)]
    else:
        return None
    return StructuredGroup(f'{name}.d_inner', 'ssm_channel', half, tuple(members))


def _attention_group(name, attn):
    d, h = attn.head_dims, attn.num_heads
    members = []
    for part in range(3):  # q, k, v
        members += _linear(f'{name}.qkv', attn.qkv, 0, part * h * d, d)
    members.append(Member(f'{name}.proj.weight', 1, 0, d, True))
    if getattr(attn, 'crpe', None) is not None:  # conv-relative attention: depthwise conv over the values
        members += _linear(f'{name}.crpe', attn.crpe, 0, 0, d)
    return StructuredGroup(f'{name}.heads', 'attn_head', h, tuple(members))


def _mlp_group(name, mlp):
    members = _linear(f'{name}.fc1', mlp.fc1, 0) + [Member(f'{name}.fc2.weight', 1, kill=True)]
    return StructuredGroup(f'{name}.hidden', 'mlp_hidden', mlp.fc1.out_features, tuple(members))


def _conv_block_group(name, block):
    members = _linear(f'{name}.conv1', block.conv1, 0)
    members += [Member(f'{name}.norm1.weight', 0, kill=True), Member(f'{name}.norm1.bias', 0, kill=True),
                Member(f'{name}.norm1.running_mean', 0), Member(f'{name}.norm1.running_var', 0),
                Member(f'{name}.conv2.weight', 1)]
    return StructuredGroup(f'{name}.channels', 'conv_channel', block.conv1.out_channels, tuple(members))


def _convnext_block_group(name, block):
    members = _linear(f'{name}.pwconv1', block.pwconv1, 0) + [Member(f'{name}.pwconv2.weight', 1, kill=True)]
    return StructuredGroup(f'{name}.channels', 'conv_channel', block.pwconv1.out_features, tuple(members))


def structured_groups(model: nn.Module) -> list:
    """Every structured group of ``model`` (any wrapper: names are full ``named_parameters`` names), in module
    order: Vim / Mamba mixers (plain, inverted-residual and SE variants), MambaVision's s6 / S4D / S5 mixers,
    self-attention and window-attention heads, MambaVision MLPs, conv blocks and ConvNeXt blocks. Every returned
    unit can be removed exactly once its kill members are zero.
    """
    from mmssm.models.backbones.mamba_vision import ConvBlock, ConvNeXtBlock, Mlp
    from mmssm.models.layers.mamba_mixer import MambaMixer
    from mmssm.models.layers.self_attention import MultiheadSelfAttention
    from mmssm.models.layers.split_conv_mixer import SplitConvMixer
    from mmssm.models.layers.window_attention import _WindowTokenAttention
    groups = []
    for name, module in model.named_modules():
        group = None
        if isinstance(module, MambaMixer):
            group = _mamba_mixer_group(name, module)
        elif isinstance(module, SplitConvMixer):
            group = _split_conv_mixer_group(name, module)
        elif isinstance(module, (MultiheadSelfAttention, _WindowTokenAttention)):
            group = _attention_group(name, module)
        elif isinstance(module, Mlp):
            group = _mlp_group(name, module)
        elif isinstance(module, ConvBlock) and module.norm1.affine:
            group = _conv_block_group(name, module)
        elif isinstance(module, ConvNeXtBlock):
            group = _convnext_block_group(name, module)
        if group is not None:
            groups.append(group)
    return groups


def member_slice(member: Member, unit):
    """The index tuple selecting unit ``unit`` (an int) of ``member`` in its tensor."""
    start = member.offset + unit * member.width
    return (slice(None),) * member.dim + (slice(start, start + member.width),)


def unit_indices(member: Member, units):
    """Indices along ``member.dim`` covered by ``units`` (an iterable of unit numbers), in order."""
    return [member.offset + u * member.width + k for u in units for k in range(member.width)]


def masked_units(groups, masks: dict) -> dict:
    """Group name -> the units whose kill slices are all False in ``masks`` (parameter name -> bool keep-mask, as
    the pruning hooks save them in ``checkpoint['mmssm_pruning']['masks']``). A group with a kill member that has no
    mask has none."""
    units = {}
    for group in groups:
        kills = [m for m in group.members if m.kill]
        if not all(m.param in masks for m in kills):
            units[group.name] = []
            continue
        units[group.name] = [u for u in range(group.size)
                             if not any(masks[m.param][member_slice(m, u)].any() for m in kills)]
    return units


def dead_units(model: nn.Module, group: StructuredGroup) -> list:
    """The units of ``group`` whose kill members are all exactly zero."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    kills = [m for m in group.members if m.kill]
    return [u for u in range(group.size)
            if all(not tensors[m.param][member_slice(m, u)].any() for m in kills)]
