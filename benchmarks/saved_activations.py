"""Activation memory of a training forward, counted on a CPU: the bytes of the tensors autograd keeps for the
backward (saved-tensor hooks, each storage once, plus the inputs an activation checkpoint holds), per image.
Issue 17's training-memory target is about this: peak training memory is weights, optimizer state and workspace
plus these activations.

    TRITON_INTERPRET=1 python benchmarks/saved_activations.py [--batch 8] [--size 224]

Vim runs its channels-last path (the Triton backend, as on a GPU with ``scan_backend='triton'``): the Triton
launches are stubbed (benchmarks/host_overhead.py), so the kernels do not run, but every tensor the ops save has
its real shape and dtype. bf16 autocast as in the GPU training runs. DeiT is mmpretrain's (if installed), on
torch's CPU attention.
"""
import argparse
import sys

import torch
import torch.utils.checkpoint

sys.path.insert(0, '.')
from benchmarks.host_overhead import stub_kernels  # noqa: E402


class SavedBytes:
    """Counts the storage bytes saved for the backward inside ``with``, each storage once."""

    def __init__(self):
        self.total, self.seen = 0, set()

    def add(self, tensor):
        key = tensor.untyped_storage().data_ptr()
        if key not in self.seen:
            self.seen.add(key)
            self.total += tensor.untyped_storage().nbytes()

    def pack(self, tensor):
        self.add(tensor)
        return tensor

    def checkpoint(self, original):
        def wrapped(function, *args, **kwargs):  # a checkpoint keeps its tensor inputs for the recompute
            for arg in args:
                if isinstance(arg, torch.Tensor):
                    self.add(arg)
            return original(function, *args, **kwargs)
        return wrapped


def measure(model, batch, size):
    from mmssm.models.layers import mamba_mixer
    counter = SavedBytes()
    originals = torch.utils.checkpoint.checkpoint, mamba_mixer.checkpoint
    torch.utils.checkpoint.checkpoint = counter.checkpoint(originals[0])
    mamba_mixer.checkpoint = counter.checkpoint(originals[1])
    x = torch.randn(batch, 3, size, size)
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16), \
                torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            model(x)
    finally:
        torch.utils.checkpoint.checkpoint, mamba_mixer.checkpoint = originals
    return counter.total / batch / 2 ** 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--arch', default='tiny')
    args = parser.parse_args(argv)
    stub_kernels()
    from mmssm.models import Vim
    rows = []
    for label, options in (('Vim, fused_training=False', dict(mixer_cfg=dict(fused_training=False))),
                           ('Vim (fused_training, the default)', {}),
                           ('Vim, scan_recompute', dict(mixer_cfg=dict(scan_recompute=True))),
                           ('Vim, with_cp (whole blocks)', dict(with_cp=True))):
        mixer_cfg = dict(scan_backend='triton', **options.pop('mixer_cfg', {}))
        model = Vim(args.arch, img_size=args.size, mixer_cfg=mixer_cfg, **options)
        model.train()
        rows.append((f'{label} ({args.arch})', measure(model, args.batch, args.size)))
    try:
        from mmpretrain.models import VisionTransformer
    except ImportError as error:
        print(f'(DeiT skipped: {error})')
    else:
        model = VisionTransformer(f'deit-{args.arch}', img_size=args.size)
        model.train()
        rows.append((f'DeiT ({args.arch}, mmpretrain)', measure(model, args.batch, args.size)))
    print(f'saved for the backward, {args.size} px, batch {args.batch}, bf16 autocast (CPU count)\n')
    print('| model | MiB per image | vs the last row |\n|---|---:|---:|')
    for label, mib in rows:
        print(f'| {label} | {mib:.2f} | {mib / rows[-1][1]:.2f}x |')
    return rows


if __name__ == '__main__':
    main()
