"""Convert an original Vision Mamba checkpoint (hustvl/Vim) to mmssm's layout.

    python tools/model_converters/vim2mmssm.py SRC DST [--backbone-only] [--cls-token {middle,head}] [--trust-pickle]

DST holds ``{'state_dict': ..., 'meta': ...}`` (MMEngine's checkpoint layout). By default its keys are those of an
MMPretrain ``ImageClassifier`` (``backbone.*`` and ``head.fc.*`` of a ``LinearClsHead``): use it with
``load_from=DST``, or in the backbone with ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
With ``--backbone-only`` it holds the backbone's keys without a prefix (no head): use it in the backbone with
``init_cfg=dict(type='Pretrained', checkpoint=DST)`` (no prefix) or ``load_checkpoint(backbone, DST)``.
"""
import argparse
import os.path as osp
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing mmssm

from mmssm.converters.checkpoint_file import load_checkpoint_file  # noqa: E402
from mmssm.converters.vim import compare_rope_tables, vim_config_snippet, vim_conversion  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Convert an original Vim (hustvl/Vim) checkpoint to mmssm.')
    parser.add_argument('src', help='original checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--backbone-only', action='store_true',
                        help="keep only the backbone's weights, without the 'backbone.' prefix (drops the head)")
    parser.add_argument('--cls-token', choices=['middle', 'head'], default='middle',
                        help="where the original model put its class token (default: middle, the released "
                             "models'); recorded with the weights, so that a Vim without a class token can load them")
    parser.add_argument('--trust-pickle', action='store_true',
                        help='allow loading SRC with weights_only=False if it needs it: this runs any code the '
                             'file holds, so only for files from a source you trust')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.abspath(args.src) == osp.abspath(args.dst):
        sys.exit('error: DST must differ from SRC.')
    checkpoint = load_checkpoint_file(args.src, args.trust_pickle)
    try:
        result = vim_conversion(checkpoint, backbone_only=args.backbone_only, cls_token=args.cls_token)
    except ValueError as error:
        sys.exit(f'error: {args.src}: {error}')
    arch = result.arch
    original_args = checkpoint.get('args') if isinstance(checkpoint, dict) else None
    original_model = getattr(original_args, 'model', None)
    original_input_size = getattr(original_args, 'input_size', None)

    meta = dict(
        converted_from=osp.basename(args.src),
        converter='tools/model_converters/vim2mmssm.py',
        backbone_only=args.backbone_only,
        vim_arch={key: (list(value) if isinstance(value, tuple) else value) for key, value in arch.items()},
    )
    if isinstance(original_model, str):
        meta['original_model'] = original_model
    if isinstance(original_input_size, int):
        meta['original_input_size'] = original_input_size
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=result.state_dict, meta=meta), args.dst)

    print(f'Converted {args.src} -> {args.dst}')
    if isinstance(original_model, str):
        print(f'Original model (from the checkpoint\'s args): {original_model}')
    if isinstance(original_input_size, int):
        print(f'Original input size (from the checkpoint\'s args): {original_input_size}')
    print('Inferred Vim arch:')
    for key, value in arch.items():
        if key != 'notes':
            print(f'  {key}: {value}')
    print(f'Keys: {len(result.mapped)} mapped, {len(result.dropped)} dropped.')
    for key, reason in result.dropped:
        print(f'  dropped {key}: {reason}')
    if result.ignored_entries:
        print(f'Other checkpoint entries, not converted: {", ".join(map(str, result.ignored_entries))}')
    print('What the weights cannot tell:')
    for note in arch['notes']:
        print(f'  - {note}')
    rope_check = compare_rope_tables(checkpoint)
    if rope_check is not None:
        print(f'RoPE check: {rope_check[1]}' if rope_check[0] else f'warning: {rope_check[1]}')
    print('Config:')
    print(vim_config_snippet(arch, backbone_only=args.backbone_only, checkpoint=args.dst))


if __name__ == '__main__':
    main()
