"""Turn a structurally masked checkpoint into a physically smaller model (mmssm issue 15).

    python tools/analysis/prune_export.py CONFIG CHECKPOINT OUT_DIR [--semi-structured-2-4] [--cfg-options ...]

Builds the model of CONFIG, loads CHECKPOINT (weights_only) strictly and removes the pruned units of its structured
groups (SSM inner channels, attention heads, MLP hidden units, conv-block channels: :mod:`mmssm.pruning.structure`).
Which units: those whose kill slices are masked in ``checkpoint['mmssm_pruning']['masks']`` when the checkpoint
comes from a training run with a pruning hook (``granularity='channel'``); they must be zero in the weights. A plain
state dict has no masks: then every dead unit (kill members exactly zero) goes. It writes OUT_DIR/pruned.pth (a
state dict) and OUT_DIR/<config name>_pruned.py (CONFIG with ``model.backbone.pruned_widths`` and the new
checkpoint, without the pruning hooks). It checks on a random batch, in float64, that the exported model's output
equals the masked model's, and prints a width table and parameter counts.

``--semi-structured-2-4`` also prunes every eligible Linear weight to the 2:4 pattern by magnitude (this changes
the output; the check is then the pattern), and on a GPU of compute capability >= 8.0 times the layers converted
with ``torch.sparse.to_sparse_semi_structured``; on CPU the pattern is only applied and checked.
"""
import argparse
import copy
import os.path as osp
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmssm.converters.checkpoint_file import load_checkpoint_file  # noqa: E402
from mmssm.pruning import dead_units, export_pruned, masked_units, structured_groups  # noqa: E402
from mmssm.pruning.semi_structured import is_2_4, prune_2_4, semi_structured_supported, to_semi_structured  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a structurally pruned (masked) checkpoint as a smaller '
                                                 'model.')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out_dir')
    parser.add_argument('--img-size', type=int, default=None, help='side of the check batch (default: the '
                        "backbone's img_size, else 224)")
    parser.add_argument('--semi-structured-2-4', action='store_true',
                        help='also prune eligible Linear weights to 2:4 and convert them where the GPU supports it')
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='key=value overrides of CONFIG, the same as given to tools/train.py for CHECKPOINT')
    return parser.parse_args(argv)


def build_model(cfg):
    from mmengine.registry import init_default_scope

    import mmssm.models  # noqa: F401  (registers the mmssm types)
    from mmssm.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.get('backbone', model_cfg).pop('init_cfg', None)  # the checkpoint comes next, not a pretrained one
    return MODELS.build(model_cfg)


def load_state(model, path):
    """Load the weights strictly; return the pruning masks the checkpoint holds (None for a plain state dict)."""
    checkpoint = load_checkpoint_file(path)
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else checkpoint
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        sys.exit(f'error: {path} does not fit the model of the config (missing / unexpected keys or shapes); pass '
                 f'the checkpoint trained with this config.\n{str(error).strip()[:2000]}')
    pruning = checkpoint.get('mmssm_pruning') if isinstance(checkpoint, dict) else None
    return pruning['masks'] if pruning else None


def forward(model, x):
    out = model.extract_feat(x) if hasattr(model, 'extract_feat') else model(x)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if torch.is_tensor(o)]


def check_batch(model, img_size):
    backbone = getattr(model, 'backbone', model)
    size = img_size or getattr(backbone, 'img_size', None) or 224
    size = size[0] if isinstance(size, (tuple, list)) else size
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def width_table(before, after):
    lines = ['| block | width | before | after |', '|---|---|---:|---:|']
    for block in before:
        for key, full in before[block].items():
            lines.append(f'| {block} | {key} | {full} | {after.get(block, {}).get(key, full)} |')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config

    from mmssm.pruning import widths_of
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    model = build_model(cfg).eval()
    masks = load_state(model, args.checkpoint)
    groups = structured_groups(model)
    if not groups:
        sys.exit(f'error: the model of {args.config} has no structured groups (Vim / MambaVision mixers, attention, '
                 f'MLPs, conv blocks); nothing to export.')
    if masks is not None:
        removed = masked_units(groups, masks)
        for group in groups:
            live = sorted(set(removed[group.name]) - set(dead_units(model, group)))
            if live:
                sys.exit(f'error: units {live[:8]} of {group.name} are masked in the checkpoint but their weights are '
                         f'not zero: the masks were not applied to these weights; pass the checkpoint the pruning '
                         f'hook wrote.')
    else:
        removed = {g.name: dead_units(model, g) for g in groups}
    num_dead = sum(len(units) for units in removed.values())
    source = "the checkpoint's pruning masks" if masks is not None else 'zero kill members'
    before_widths = widths_of(model)
    params_before = sum(p.numel() for p in model.parameters())
    if num_dead == 0 and not args.semi_structured_2_4:
        pruned = masks is not None and any(not bool(m.all()) for m in masks.values())
        zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith('weight'))
        total = sum(p.numel() for n, p in model.named_parameters() if n.endswith('weight'))
        if pruned or zeros > 0.1 * total:
            sys.exit(f'error: {zeros / total:.0%} of the weights are zero but no unit is dead: the mask is '
                     f'unstructured, so no channel / head / hidden unit can be removed (its speed-up is ~1.0x). '
                     f"Prune with granularity='channel' (the pruning hooks over mmssm.pruning.structured_groups), "
                     f'which zeroes whole units.')
        sys.exit('error: no unit is dead, so exporting is a no-op. Prune first (the pruning hooks zero the kill '
                 'members of whole units: SSM out_proj / x_proj columns, attention proj columns, MLP fc2 columns).')

    masked = copy.deepcopy(model).double()
    exported, widths = export_pruned(model, removed)
    x = check_batch(exported, args.img_size)
    with torch.no_grad():
        ref = forward(masked, x)
        out = forward(copy.deepcopy(exported).double(), x)
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, out))
    print(f'structured export: {num_dead} units removed (from {source}); max |exported - masked| on a random '
          f'batch (float64): {diff:.3e}')
    if diff > 1e-8:
        sys.exit(f'error: the exported model differs from the masked one by {diff:.3e}: a bug; please report it.')

    if args.semi_structured_2_4:
        names = prune_2_4(exported)
        assert all(is_2_4(exported.get_submodule(n).weight) for n in names)
        print(f'2:4: pruned {len(names)} Linear weights to the 2:4 pattern by magnitude (this changes the output).')
        if semi_structured_supported():
            trial = copy.deepcopy(exported).cuda().half()
            to_semi_structured(trial, names)
            print('2:4: converted with torch.sparse.to_sparse_semi_structured on '
                  f'{torch.cuda.get_device_name()} (fp16); the saved checkpoint keeps dense 2:4 weights.')
        else:
            print('2:4: no CUDA GPU of compute capability >= 8.0 here: the pattern is applied and checked only; '
                  'convert at load time with mmssm.pruning.semi_structured.to_semi_structured on such a GPU.')

    params_after = sum(p.numel() for p in exported.parameters())
    print(width_table(before_widths, widths))
    print(f'parameters: {params_before:,} -> {params_after:,} ({params_after / params_before:.1%})')

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / 'pruned.pth'
    torch.save({'state_dict': exported.state_dict(), 'meta': {'pruned_widths': widths}}, ckpt)
    new_cfg = copy.deepcopy(cfg)
    backbone_cfg = new_cfg.model.get('backbone', new_cfg.model)
    backbone_cfg['pruned_widths'] = widths
    prefix = 'backbone.' if 'backbone' in new_cfg.model else None
    backbone_cfg['init_cfg'] = dict(type='Pretrained', checkpoint=str(ckpt.resolve()),
                                    **({'prefix': prefix} if prefix else {}))
    new_cfg['load_from'] = str(ckpt.resolve())
    # fine-tuning the exported model must not prune it again: drop the pruning hooks, keep the rest (EMA, ...)
    pruning_hooks = ('CosinePruningHook', 'IMPRewindHook', 'EarlyBirdHook', 'GradientSaliencyHook')
    new_cfg['custom_hooks'] = [h for h in new_cfg.get('custom_hooks', [])
                               if str(h.get('type', '')).split('.')[-1] not in pruning_hooks]
    cfg_path = out_dir / f'{osp.splitext(osp.basename(args.config))[0]}_pruned.py'
    new_cfg.dump(str(cfg_path))
    print(f'wrote {ckpt} and {cfg_path}')
    return exported, widths


if __name__ == '__main__':
    main()
