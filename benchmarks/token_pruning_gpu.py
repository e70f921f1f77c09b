"""ToP-ViM token pruning on Vim and PlainMamba: dense vs pruned FLOPs and inference throughput, in one run.

For each arch, the dense model (``mmssm.Vim`` / ``mmssm.PlainMamba``) and its ToP-ViM form (``mmssm.ToPVim`` /
``mmssm.ToPPlainMamba``) with the same weights (random init: throughput and FLOPs do not depend on the values) and a
1000-class linear head:
  * FLOPs: ``mmssm.analysis.flops.analyze_flops`` at batch 1, the scan counted at each stage's (pruned) length
    (PlainMamba's depthwise 2-D convs run, and are counted, on the full grid);
  * img/s: ``torch.inference_mode`` forward passes in --dtype (bf16) at --batch (1024), timed with CUDA events
    after warm-up (wall clock on the CPU) until --min-iters passes and --min-seconds have elapsed.

Pruning schedules (--schedule overrides, 'layers:keep', e.g. '10,20:0.8'; layers are 0-based blocks after which
tokens are pruned):
  * Vim (--model vim, archs tiny, small, base, test): the official ToP-ViM runs' settings, read from the file names
    of its fine-tuning logs (ZLKong/ToP-ViM, vim/ft_log): Vim-T prunes after blocks 10 and 20 keeping 0.8
    ("progressive_start_10_gap_10_ratio_0.8"), Vim-S after blocks 5 and 15 keeping 0.8
    ("small_progressive_start_5_gap_10_ratio_0.8"); Vim-B takes Vim-T's.
  * PlainMamba (--model plainmamba, archs l1, l2, l3, test): ASSUMED. The ToP-ViM paper's abstract gives only the
    PlainMamba-L3 result (81.7% top-1 at 41.6% fewer FLOPs); its layers and ratio are in none of the sources
    searched (ZLKong/ToP-ViM releases Vim code only). L3 (36 layers) prunes at quarter depth, after layers 9, 18
    and 27, keeping 0.54 at each: the ratio that gives the paper's cut by this script's count (12.86 -> 7.54
    GFLOPs at 224 px, 41.4% fewer; 196 -> 106 -> 58 -> 32 tokens). L1/L2 (24 layers) keep 0.54 after layers 6, 12
    and 18 by the same rule.

    python benchmarks/token_pruning_gpu.py --json token_pruning_gpu.json                   # H200: Vim-T/S
    python benchmarks/token_pruning_gpu.py --model plainmamba --json token_pruning_pm.json  # PlainMamba-L3
    python benchmarks/token_pruning_gpu.py --device cpu --arch test --batch 2               # smoke test anywhere
    python benchmarks/token_pruning_gpu.py --model plainmamba --device cpu --arch test --batch 2
"""
import argparse
import json
import sys
import time

import torch
from torch import nn

sys.path.insert(0, '.')

FAMILIES = {
    'vim': dict(dense='mmssm.Vim', pruned='mmssm.ToPVim', default_arch='tiny,small', patch_size=16,
                schedules={'tiny': ((10, 20), 0.8), 'small': ((5, 15), 0.8), 'base': ((10, 20), 0.8),
                           'test': ((0,), 0.5)},
                archs={'test': dict(embed_dims=32, depth=2, d_state=4, expand=2)}),
    'plainmamba': dict(dense='mmssm.PlainMamba', pruned='mmssm.ToPPlainMamba', default_arch='l3', patch_size=16,
                       schedules={'l1': ((6, 12, 18), 0.54), 'l2': ((6, 12, 18), 0.54), 'l3': ((9, 18, 27), 0.54),
                                  'test': ((0,), 0.5)},
                       archs={}),
}


class Classifier(nn.Module):

    def __init__(self, backbone, classes=1000):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dims, classes)

    def forward(self, x):
        return self.head(self.backbone(x)[-1])


def build(model, arch, size, schedule):
    import mmssm.models  # noqa: F401  (registers the types)
    from mmssm.registry import MODELS
    spec = FAMILIES[model]
    cfg = dict(type=spec['dense'], arch=spec['archs'].get(arch, arch), img_size=size, patch_size=spec['patch_size'])
    if schedule is not None:
        layers, keep = schedule
        cfg.update(type=spec['pruned'], token_pruning=dict(type='mmssm.ToP', layers=layers, keep_ratio=keep))
    torch.manual_seed(0)
    backbone = MODELS.build(cfg)
    backbone.init_weights()
    torch.manual_seed(1)
    return Classifier(backbone).eval()


def measure(model, batch, size, dtype, device, min_iters, min_seconds, warmup):
    x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
    cuda = device.type == 'cuda'
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        if cuda:
            torch.cuda.synchronize()
        iters, elapsed = 0, 0.0
        while iters < min_iters or elapsed < min_seconds:
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model(x)
                end.record()
                torch.cuda.synchronize()
                elapsed += start.elapsed_time(end) / 1000
            else:
                wall = time.perf_counter()
                model(x)
                elapsed += time.perf_counter() - wall
            iters += 1
    return batch * iters / elapsed


def count_flops(model, size, device):
    from mmssm.analysis.flops import analyze_flops
    x = torch.randn(1, 3, size, size, device=device)
    analyzer = analyze_flops(model.float(), (x,))
    return analyzer.total(), analyzer.by_operator().get('selective_scan', 0)


def parse_schedule(text):
    layers, keep = text.split(':')
    return tuple(int(i) for i in layers.split(',')), float(keep)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='vim', choices=sorted(FAMILIES))
    parser.add_argument('--arch', default=None,
                        help="comma-separated; vim: tiny, small, base, test (default tiny,small); plainmamba: l1, "
                             "l2, l3, test (default l3)")
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=1024)
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--schedule', default=None, help="'layers:keep' for every arch, e.g. '10,20:0.8'")
    parser.add_argument('--min-iters', type=int, default=5)
    parser.add_argument('--min-seconds', type=float, default=2.0)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--json', default=None)
    parser.add_argument('--profile', type=int, default=0, metavar='TOP',
                        help='also print each model\'s TOP GPU kernels (benchmarks/profile_vim.py)')
    args = parser.parse_args(argv)
    spec = FAMILIES[args.model]
    device = torch.device(args.device)
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)[args.dtype]
    rows = []
    for arch in (args.arch or spec['default_arch']).split(','):
        if not args.schedule and arch not in spec['schedules']:
            raise SystemExit(f"--arch {arch!r} has no schedule for --model {args.model} (known: "
                             f"{sorted(spec['schedules'])}); give one with --schedule 'layers:keep'.")
        schedule = parse_schedule(args.schedule) if args.schedule else spec['schedules'][arch]
        for variant, variant_schedule in (('dense', None), ('ToP', schedule)):
            model = build(args.model, arch, args.size, variant_schedule).to(device)
            flops, scan_flops = count_flops(model, args.size, device)
            model = model.to(dtype)
            img_per_s = measure(model, args.batch, args.size, dtype, device, args.min_iters, args.min_seconds,
                                args.warmup)
            if args.profile:
                from benchmarks.profile_vim import kernel_table
                x = torch.randn(args.batch, 3, args.size, args.size, device=device, dtype=dtype)
                kernel_table(model.eval(), x, 5, args.profile, f'{args.model} {arch} {variant} batch {args.batch}')
            rows.append(dict(arch=arch, variant=variant, layers=None if variant_schedule is None else
                             list(variant_schedule[0]), keep_ratio=None if variant_schedule is None else
                             variant_schedule[1], gflops=flops / 1e9, scan_gflops=scan_flops / 1e9,
                             img_per_s=img_per_s))
            del model
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    for row in rows:
        dense = next(r for r in rows if r['arch'] == row['arch'] and r['variant'] == 'dense')
        row['flops_reduction'] = 1 - row['gflops'] / dense['gflops']
        row['speedup'] = row['img_per_s'] / dense['img_per_s']
    meta = dict(model=args.model, device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                size=args.size, batch=args.batch, dtype=args.dtype, torch=torch.__version__)
    print(f"ToP-ViM on {args.model}, {meta['device']}, {args.size}px, batch {args.batch}, {args.dtype}\n")
    print('| arch | variant | layers | keep | GFLOPs | scan GFLOPs | FLOPs cut | img/s | speedup |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['arch']} | {r['variant']} | {r['layers'] or '-'} | {r['keep_ratio'] or '-'} | "
              f"{r['gflops']:.3f} | {r['scan_gflops']:.3f} | {100 * r['flops_reduction']:.1f}% | "
              f"{r['img_per_s']:.0f} | {r['speedup']:.2f}x |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=2)
    return rows


if __name__ == '__main__':
    main()
