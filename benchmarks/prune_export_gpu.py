"""Inference throughput of structurally pruned and exported models against the dense ones, in one run (issue 15).

For Vim-S and MambaVision-T (``--arch`` picks the arch name of both, e.g. 'test' for a CPU smoke run), bf16,
batch 128 at 224 by default, ``torch.inference_mode``:

  dense          the model as built
  struct50       50% of the units of every structured group (SSM inner channels, attention heads, MLP hidden
                 units; random, seed 0) masked, then physically removed by ``mmssm.pruning.export_pruned``
  semi24         every eligible Linear pruned to 2:4 by magnitude and converted with
                 ``torch.sparse.to_sparse_semi_structured`` (CUDA, compute capability >= 8.0 only)
  unstruct50     50% of every Linear / conv weight zeroed at random, kept dense: expected ~1.0x

Timing: --warmup passes, then --repeats passes each timed with CUDA events (perf_counter on CPU) after a
synchronize; img/s = batch / median pass time; speed-up = img/s / dense img/s of the same model in this run.

    python benchmarks/prune_export_gpu.py --out prune_export_gpu.json
    python benchmarks/prune_export_gpu.py --device cpu --arch test --batch 2 --size 64   # smoke run
"""
import argparse
import copy
import json
import logging
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, '.')


class Classifier(nn.Module):
    """Backbone, mean over the last map / tokens, 1000-way head (so that every variant does the same work)."""

    def __init__(self, backbone, channels, classes=1000):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        out = self.backbone(x)[-1]
        return self.head(out.flatten(2).mean(-1) if out.dim() == 4 else out)


def build(family, arch, size):
    from mmssm.models import MambaVision, Vim
    torch.manual_seed(0)
    if family == 'vim':
        backbone = Vim(arch, img_size=size, patch_size=16)
        channels = backbone.embed_dims
    else:
        backbone = MambaVision(arch, out_indices=3)
        channels = backbone.num_features[-1]
    backbone.init_weights()
    return Classifier(backbone, channels).eval()


@torch.no_grad()
def mask_structured(model, fraction, seed=0):
    """Zero the kill members of ``fraction`` of the units of every group (at least one unit stays)."""
    from mmssm.pruning import member_slice, structured_groups
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    for group in structured_groups(model):
        count = min(int(round(group.size * fraction)), group.size - 1)
        for unit in torch.randperm(group.size, generator=gen)[:count].tolist():
            for member in group.members:
                if member.kill:
                    params[member.param][member_slice(member, unit)] = 0


@torch.no_grad()
def mask_unstructured(model, fraction, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            keep = torch.rand(module.weight.shape, generator=gen) >= fraction
            module.weight.mul_(keep.to(module.weight.device, module.weight.dtype))


def measure(model, x, warmup, repeats):
    cuda = x.is_cuda
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                out = model(x)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                begin = time.perf_counter()
                out = model(x)
                times.append(time.perf_counter() - begin)
    return x.shape[0] / statistics.median(times), out.float()


def variants(family, args, device, dtype):
    """Yield (name, model or error string, note) for every variant of one family."""
    from mmssm.pruning import export_pruned
    from mmssm.pruning.semi_structured import prune_2_4, semi_structured_supported, to_semi_structured
    dense = build(family, args.arch, args.size)
    yield 'dense', dense, ''
    masked = copy.deepcopy(dense)
    mask_structured(masked, 0.5)
    exported, _ = export_pruned(copy.deepcopy(masked))
    params = sum(p.numel() for p in exported.parameters()) / sum(p.numel() for p in dense.parameters())
    yield 'struct50', exported, f'params {params:.0%} of dense'
    if device.type == 'cuda' and semi_structured_supported(device):
        model = copy.deepcopy(dense).to(device, dtype)
        names = prune_2_4(model)
        try:
            to_semi_structured(model, names)
            yield 'semi24', model, f'{len(names)} Linear layers 2:4'
        except Exception as error:  # report the reason in the table rather than stopping the run
            yield 'semi24', f'{type(error).__name__}: {error}'[:200], ''
    else:
        yield 'semi24', 'needs a CUDA GPU of compute capability >= 8.0', ''
    model = copy.deepcopy(dense)
    mask_unstructured(model, 0.5)
    yield 'unstruct50', model, 'dense kernels, 50% zeros'


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--families', default='vim,mambavision')
    parser.add_argument('--arch', default=None, help="arch of both families (default: Vim 'small', MambaVision "
                        "'tiny')")
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--out', default=None, help='JSON file')
    args = parser.parse_args()
    logging.getLogger('mmengine').setLevel(logging.WARNING)
    device = torch.device(args.device)
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)[args.dtype]
    info = dict(device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                torch=torch.__version__, dtype=args.dtype, batch=args.batch, size=args.size, runs=[])
    print(f"{info['device']}, torch {torch.__version__}, {args.dtype}, batch {args.batch}, {args.size}px",
          flush=True)
    for family in args.families.split(','):
        arch = args.arch or dict(vim='small', mambavision='tiny')[family]
        x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        x = x.to(device, dtype)
        dense_rate = None
        for name, model, note in variants(family, argparse.Namespace(**{**vars(args), 'arch': arch}), device,
                                          dtype):
            run = dict(family=family, arch=arch, variant=name, note=note)
            if isinstance(model, str):
                run.update(img_per_s=None, speedup=None, note=model)
            else:
                model = model.to(device, dtype)
                try:
                    rate, _ = measure(model, x, args.warmup, args.repeats)
                except Exception as error:  # e.g. an op the sparse kernels lack
                    run.update(img_per_s=None, speedup=None, note=f'{type(error).__name__}: {error}'[:200])
                else:
                    dense_rate = rate if name == 'dense' else dense_rate
                    run.update(img_per_s=rate, speedup=rate / dense_rate if dense_rate else None)
                del model
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
            info['runs'].append(run)
            print(f"{family} {name}: {run['img_per_s'] or float('nan'):.1f} img/s {note}", flush=True)
    lines = ['| model | variant | img/s | speed-up | note |', '|---|---|---:|---:|---|']
    for run in info['runs']:
        rate = f"{run['img_per_s']:.1f}" if run['img_per_s'] else '-'
        speedup = f"{run['speedup']:.2f}x" if run['speedup'] else '-'
        lines.append(f"| {run['family']}-{run['arch']} | {run['variant']} | {rate} | {speedup} | {run['note']} |")
    print('\n'.join(lines))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(info, f, indent=2)


if __name__ == '__main__':
    main()
