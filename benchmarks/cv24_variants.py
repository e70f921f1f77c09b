"""The vim_ssm_cv24 MambaVision variants trained from scratch on scikit-learn's digits with one fixed recipe:
val accuracy (mean ± std over seeds), parameters, FLOPs (scan included, ``mmssm.analysis.flops``) and inference
throughput on the chosen device. Writes JSON and prints a markdown table.

Recipe (the same for every variant; only the variant's option changes):
* data: ``mmssm.datasets.digits_arrays``, 1437 train / 360 val (stratified, split seed 0), upscaled to
  ``--image-size`` (32), scaled to [0, 1] and normalized by the train mean/std; augmentation: random shifts of up to
  ``image_size // 8`` pixels (zero padding), no flips (digits are not flip-invariant);
* model: ``SMALL_ARCH``, a 4-stage MambaVision with dims 16-32-64-128, depths (1, 1, 2, 2), heads (1, 2, 4, 8),
  mlp ratio 2, no layer scale, windows (8, 8, 2, 1) (at 32x32 the hybrid stages' maps are 2x2 and 1x1: one window
  each); the head is GAP + linear (MMPretrain's ``GlobalAveragePooling`` and ``LinearClsHead``) or
  ``mmssm.AttentionPoolingHead`` for the 'attention_pool_head' and 'attention_pool_both' variants;
* optimizer AdamW lr 2e-3, weight decay 0.05, batch 64, ``--epochs`` (8) epochs, linear warm-up for the first
  epoch then cosine to 0; cross-entropy loss; fp32; seeds ``--seeds`` (0 1; a seed sets the
  initialisation, the batch order and the shifts).

Throughput is timed with batch 64 after one warm-up batch, and CPU numbers move with the machine's load.

Run: ``python benchmarks/cv24_variants.py --variants baseline attention_pool_head --seeds 0 1 --out x.json``
(``--variants`` defaults to the variants that need no new backbone option; ``VARIANTS`` lists them all).
"""
import argparse
import json
import logging
import math
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import torch
import torch.nn.functional as F
from torch import nn

SMALL_ARCH = dict(embed_dims=16, stem_channels=16, depths=(1, 1, 2, 2), num_heads=(1, 2, 4, 8),
                  window_size=(8, 8, 2, 1), mlp_ratio=2, layer_scale=None, layer_scale_conv=None,
                  drop_path_rate=0.)

# name -> (backbone options, head); the new variants need the attention / num_registers / conv_block options
VARIANTS = {
    'baseline': (dict(), 'gap'),
    'attention_pool_head': (dict(), 'attention_pool'),
    'attention_pool_downsample': (dict(downsample='attention_pool'), 'gap'),
    'attention_pool_both': (dict(downsample='attention_pool'), 'attention_pool'),
    's4d': (dict(mixer='s4d'), 'gap'),
    's5': (dict(mixer='s5'), 'gap'),
    'bilinear': (dict(discretization='bilinear'), 'gap'),
    'foh': (dict(discretization='foh'), 'gap'),
    'window': (dict(attention='window'), 'gap'),
    'shifted_window': (dict(attention='shifted_window'), 'gap'),
    'sliding_window': (dict(attention='sliding_window'), 'gap'),
    'conv_relative': (dict(attention='conv_relative'), 'gap'),
    'registers4': (dict(num_registers=4), 'gap'),
    'convnext': (dict(conv_block='convnext'), 'gap'),
}
EXISTING = ['baseline', 'attention_pool_head', 'attention_pool_downsample', 'attention_pool_both', 's4d', 's5',
            'bilinear']


class Classifier(nn.Module):
    """Backbone + (GAP neck + linear head | attention-pooling head), called on an image tensor."""

    def __init__(self, backbone, neck, head):
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head

    def forward(self, x):
        feats = self.backbone(x)
        return self.head(self.neck(feats) if self.neck is not None else feats)


def build_variant(name, num_classes=10, window_size=None, depths=None):
    from mmengine.logging import MMLogger
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS

    import mmssm.models  # noqa: F401  (registers mmssm types)
    from mmssm.registry import MODELS
    if name not in VARIANTS:
        raise ValueError(f'cv24_variants: unknown variant {name!r}; choose from {sorted(VARIANTS)}.')
    options, head = VARIANTS[name]
    arch = dict(SMALL_ARCH)
    if window_size is not None:
        arch['window_size'] = window_size
    if depths is not None:
        arch['depths'] = tuple(depths)
    backbone = MODELS.build(dict(type='mmssm.MambaVision', arch=arch, out_indices=3, **options))
    channels = arch['embed_dims'] * 8
    if head == 'gap':
        neck = PRETRAIN_MODELS.build(dict(type='mmpretrain.GlobalAveragePooling'))
        head = PRETRAIN_MODELS.build(dict(type='mmpretrain.LinearClsHead', num_classes=num_classes,
                                          in_channels=channels))
    else:
        neck = None
        head = MODELS.build(dict(type='mmssm.AttentionPoolingHead', num_classes=num_classes, in_channels=channels))
    model = Classifier(backbone, neck, head)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs every parameter's initialiser
    try:
        model.backbone.init_weights()
        model.head.init_weights()
    finally:
        logger.setLevel(level)
    return model


def load_data(image_size, split_seed=0):
    from mmssm.datasets import digits_arrays
    tensors = {}
    for split in ('train', 'val'):
        images, labels = digits_arrays(split, seed=split_seed, image_size=image_size)
        tensors[split] = (torch.from_numpy(images[..., 0]).float().div(255.).unsqueeze(1),
                          torch.from_numpy(labels))
    mean, std = tensors['train'][0].mean(), tensors['train'][0].std()
    return {split: (((x - mean) / std).expand(-1, 3, -1, -1).contiguous(), y) for split, (x, y) in tensors.items()}


def random_shift(x, max_shift, generator):
    """Shift each image by up to ``max_shift`` pixels in each axis (zero fill): the recipe's only augmentation."""
    if max_shift == 0:
        return x
    padded = F.pad(x, (max_shift,) * 4)
    size = x.shape[-1]
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])


@torch.no_grad()
def evaluate(model, x, y, batch_size=256):
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        correct += (model(x[start:start + batch_size]).argmax(-1) == y[start:start + batch_size]).sum().item()
    return correct / len(x)


def train_one(name, data, seed, epochs, batch_size=64, lr=2e-3, weight_decay=0.05, device='cpu', max_steps=None,
              log=print, depths=None):
    """Train variant ``name`` from scratch with the fixed recipe; returns (model, val accuracy, seconds)."""
    torch.manual_seed(seed)
    model = build_variant(name, depths=depths).to(device)
    x_train, y_train = data['train']
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = steps_per_epoch

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(seed)
    max_shift = x_train.shape[-1] // 8
    start_time, step = time.perf_counter(), 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        losses = []
        for start in range(0, len(x_train), batch_size):
            index = order[start:start + batch_size]
            inputs = random_shift(x_train[index], max_shift, generator).to(device)
            loss = F.cross_entropy(model(inputs), y_train[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        x_val, y_val = data['val']
        accuracy = evaluate(model, x_val.to(device), y_val.to(device))
        log(f'[{name} seed {seed}] epoch {epoch + 1}/{epochs} loss {statistics.fmean(losses):.4f} '
            f'val acc {accuracy:.4f} ({time.perf_counter() - start_time:.0f} s)')
        if max_steps is not None and step >= max_steps:
            break
    return model, accuracy, time.perf_counter() - start_time


def measure(model, image_size, device, batch_size=64, repeats=5):
    """Parameters, FLOPs of one image (scan included) and inference throughput (img/s, batch ``batch_size``)."""
    from mmssm.analysis.flops import analyze_flops
    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    flops = analyze_flops(model.cpu().float(), torch.zeros(1, 3, image_size, image_size)).total()
    model = model.to(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    with torch.no_grad():
        model(x)
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        if device.startswith('cuda'):
            torch.cuda.synchronize()
    return params, int(flops), repeats * batch_size / (time.perf_counter() - start)


def table(results):
    lines = ['| variant | val acc (%) | seeds | params (K) | FLOPs (M) | throughput (img/s) |',
             '|---|---|---|---|---|---|']
    for row in results:
        accs = [100 * a for a in row['val_acc']]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.
        lines.append(f"| {row['variant']} | {statistics.fmean(accs):.2f} ± {std:.2f} | {len(accs)} | "
                     f"{row['params'] / 1e3:.1f} | {row['flops'] / 1e6:.2f} | {row['throughput']:.0f} |")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variants', nargs='+', default=EXISTING, help=f'any of {sorted(VARIANTS)}')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--image-size', type=int, default=32)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--out', default='cv24_variants.json')
    parser.add_argument('--depths', nargs=4, type=int, default=None,
                        help='override SMALL_ARCH depths, e.g. 1 1 4 2: two attention blocks in stage 3, so that '
                             "'shifted_window' shifts one of them (with one attention block per stage nothing shifts)")
    args = parser.parse_args(argv)
    for name in args.variants:
        if name not in VARIANTS:
            parser.error(f'unknown variant {name!r}; choose from {sorted(VARIANTS)}')
    data = load_data(args.image_size)
    results = []
    for name in args.variants:
        accs, seconds = [], []
        for seed in args.seeds:
            model, accuracy, elapsed = train_one(name, data, seed, args.epochs, device=args.device,
                                                 log=lambda msg: print(msg, flush=True), depths=args.depths)
            accs.append(accuracy)
            seconds.append(elapsed)
        params, flops, throughput = measure(model, args.image_size, args.device)
        results.append(dict(variant=name, options=VARIANTS[name][0], head=VARIANTS[name][1], val_acc=accs,
                            train_seconds=seconds, params=params, flops=flops, throughput=throughput))
        with open(args.out, 'w') as file:  # rewritten after each variant, so a partial run keeps its results
            json.dump(dict(date=datetime.now(timezone.utc).isoformat(timespec='seconds'),
                           machine=f'{platform.processor() or platform.machine()}, torch {torch.__version__}, '
                                   f'{torch.get_num_threads()} threads, device {args.device}',
                           command=' '.join(sys.argv),
                           arch=dict(SMALL_ARCH, **({} if args.depths is None else dict(depths=args.depths))),
                           epochs=args.epochs,
                           image_size=args.image_size, results=results), file, indent=1)
    print(table(results), flush=True)


if __name__ == '__main__':
    main()
