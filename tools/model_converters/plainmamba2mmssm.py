"""Convert an official PlainMamba checkpoint (ChenhongyiYang/PlainMamba) to mmssm's layout.

Usage: python tools/model_converters/plainmamba2mmssm.py SRC DST [--backbone-only]
"""
import argparse

import torch

from mmssm.converters.checkpoint_file import load_checkpoint_file
from mmssm.converters.plainmamba import convert_plainmamba_checkpoint, infer_plainmamba_arch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='official PlainMamba checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--backbone-only', action='store_true', help='keep only backbone keys, unprefixed')
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint_file(args.src)
    state_dict = convert_plainmamba_checkpoint(checkpoint, backbone_only=args.backbone_only)
    torch.save(dict(state_dict=state_dict), args.dst)
    print(f'{len(state_dict)} tensors -> {args.dst}; backbone arch={infer_plainmamba_arch(checkpoint)}')


if __name__ == '__main__':
    main()
