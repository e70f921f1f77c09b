"""Convert an official MambaVision checkpoint (NVlabs/MambaVision) to mmssm's layout.

    python tools/model_converters/mambavision2mmssm.py SRC DST [--backbone-only] [--ema] [--name NAME]
                                                          [--trust-pickle]

SRC is a classification checkpoint (``mambavision_tiny_1k.pth.tar``, ..., ``mambavision_L3_21k_740m_512.pth.tar``)
or a detection / segmentation one (``cascade_mask_rcnn_mamba_vision_*.pth``, ``mamba_vision_160k_ade20k-*.pth``).
DST holds ``{'state_dict': ..., 'meta': ...}`` (MMEngine's layout). By default its keys are those of a whole
MMPretrain ``ImageClassifier`` (``backbone.*`` + ``head.fc.*``) or of the detector / segmentor (``backbone.*`` with
the neck and heads unchanged): use it with ``load_from=DST``, or in the backbone with
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``. With ``--backbone-only`` it holds the
backbone's keys without a prefix: ``init_cfg=dict(type='Pretrained', checkpoint=DST)``.

SRC is read with ``torch.load(weights_only=True)``, allowing only ``argparse.Namespace`` (the ``args`` that timm's
training checkpoints hold) beside tensors and plain containers. The converted weights are checked by loading them,
strictly, into an mmssm MambaVision built from the settings the weights tell.
"""
import argparse
import os.path as osp
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing mmssm

from mmssm.converters.checkpoint_file import load_checkpoint_file  # noqa: E402
from mmssm.converters.mambavision import (  # noqa: E402
    mambavision_config_snippet,
    mambavision_conversion,
    verify_mambavision_conversion,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Convert an official MambaVision checkpoint to mmssm.')
    parser.add_argument('src', help='official checkpoint (.pth.tar / .pth)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--backbone-only', action='store_true',
                        help="keep only the backbone's weights, without the 'backbone.' prefix")
    parser.add_argument('--ema', action='store_true', help="convert the checkpoint's state_dict_ema (timm)")
    parser.add_argument('--name', default=None,
                        help='the official model name (e.g. mamba_vision_L3_512_21k), to pick the window sizes of '
                             'models that differ only in them; default: the name recorded in SRC, else its file name')
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
        result = mambavision_conversion(checkpoint, backbone_only=args.backbone_only, use_ema=args.ema,
                                        name_hint=args.name or osp.basename(args.src))
        verify_mambavision_conversion(result)
    except ValueError as error:
        sys.exit(f'error: {args.src}: {error}')
    arch = result.arch
    meta = dict(
        converted_from=osp.basename(args.src),
        converter='tools/model_converters/mambavision2mmssm.py',
        backbone_only=args.backbone_only,
        kind=result.kind,
        mambavision_arch={key: value for key, value in arch.items() if key != 'notes'},
    )
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=result.state_dict, meta=meta), args.dst)

    print(f'Converted {args.src} -> {args.dst} ({result.kind} checkpoint)')
    print(f"Arch: {arch['arch']!r}" + (f" (the weights fit {arch['candidates']})" if len(arch['candidates']) > 1
                                       else ''))
    print(f'Keys: {len(result.mapped)} mapped, {len(result.kept)} kept unchanged (outside the backbone), '
          f'{len(result.dropped)} dropped.')
    for key, reason in result.dropped[:20]:
        print(f'  dropped {key}: {reason}')
    if len(result.dropped) > 20:
        print(f'  ... and {len(result.dropped) - 20} more')
    if result.ignored_entries:
        print(f'Other checkpoint entries, not converted: {", ".join(map(str, result.ignored_entries))}')
    print('Checked: the backbone weights load strictly into mmssm.MambaVision.')
    if arch['notes']:
        print('What the weights cannot tell:')
        for note in arch['notes']:
            print(f'  - {note}')
    print('Config:')
    print(mambavision_config_snippet(arch, backbone_only=args.backbone_only, checkpoint=args.dst))


if __name__ == '__main__':
    main()
