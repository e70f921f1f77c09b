"""Vim inference throughput and peak memory on a GPU, against timm's DeiT and against the same Vim running on
mamba-ssm's kernels, all in one run.

Models (each a 1000-class classifier, bf16 weights and inputs, ``torch.inference_mode``):
  vim_t / vim_s           mmssm's Vim-T / Vim-S with the scan backend that ``auto`` picks on this GPU (with the
                          CUDA extension built: the mixers' channels-last Triton path for inference, the
                          extension for training)
  vim_t_cuda / vim_s_cuda mmssm's model on the CUDA extension (scan_backend='cuda': transposing mixers)
  vim_t_mamba / vim_s_mamba  the same models (same weights) with mamba-ssm's selective-scan and causal-conv1d
                          CUDA kernels, built from their sdists (benchmarks/mamba_kernels.py) and called as the
                          original Vim calls them (backward direction by flipping)
  vim_t_triton / vim_s_triton  mmssm's model with scan_backend='triton': the mixers' channels-last path (the
                          conv and scan kernels read the matmuls' layouts; no transposes or copies)
  vim_t_triton_graph ...  the _triton model's forward captured once in a CUDA graph and replayed
                          (mmssm.engine.CUDAGraphForward: no Python or launch overhead per pass); in training
                          (any model, deit_t_graph too) the whole step (mmssm.engine.CUDAGraphTrainStep)
  vim_t_unfused / vim_s_unfused  mmssm's model with the residual add + RMSNorm in torch (fused_add_norm=False),
                          to measure the fused Triton add + norm kernel
  ..._recompute, ..._cp   (training) the mixers with scan_recompute=True; the blocks with with_cp=True
  ..._autograd            (training) the mixers with fused_training=False: autograd's graph of the unfused path
                          (vim_t_triton_autograd; the default runs mmssm.ops.fused_mixer's Function)
  deit_t / deit_s         timm DeiT with fused scaled-dot-product attention
  deit_t_matmul / deit_s_matmul  the same DeiT computing the L x L attention matrix explicitly (the attention
                          of the Vim paper's time)

    python benchmarks/vim_gpu.py --sdist-dir .kit/sdist --json vim_gpu.json

Prints a table (img/s and peak MiB per model and size) and writes JSON. Throughput: after warm-up, forward passes
are timed with CUDA events until --min-iters passes and --min-seconds have elapsed (or --max-seconds), and
img/s = batch * passes / time. Peak memory: ``torch.cuda.max_memory_allocated`` over the timed passes, weights
included.
"""
import argparse
import json
import logging
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, '.')

from mmssm.engine.cuda_graph import CUDAGraphForward, CUDAGraphTrainStep  # noqa: E402

VIM_ARCHS = dict(vim_t='tiny', vim_s='small')
DEIT_NAMES = dict(deit_t='deit_tiny_patch16_224', deit_s='deit_small_patch16_224')


class Classifier(nn.Module):

    def __init__(self, backbone, classes=1000):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dims, classes)

    def forward(self, x):
        return self.head(self.backbone(x)[-1])


def vim_base(name):
    """The model a Vim entry builds (its weights and outputs are shared by all its variants)."""
    for suffix in ('_mamba', '_unfused', '_triton', '_graph', '_cuda', '_recompute', '_cp', '_autograd'):
        name = name.replace(suffix, '')
    return name


def build_vim(name, size):
    from mmssm.models import Vim
    torch.manual_seed(0)
    mixer_cfg = dict(scan_backend='triton') if '_triton' in name else dict(scan_backend='cuda') if '_cuda' in name \
        else {}
    if '_recompute' in name:
        mixer_cfg['scan_recompute'] = True
    if '_autograd' in name:
        mixer_cfg['fused_training'] = False
    backbone = Vim(VIM_ARCHS[vim_base(name)], img_size=size, patch_size=16,
                   fused_add_norm=not name.endswith('_unfused'), mixer_cfg=mixer_cfg or None,
                   with_cp='_cp' in name)
    backbone.init_weights()
    return Classifier(backbone)


def build_deit(name, size):
    import timm
    base = name.replace('_matmul', '').replace('_graph', '')
    model = timm.create_model(DEIT_NAMES[base], img_size=size, num_classes=1000)
    if name.endswith('_matmul'):
        for block in model.blocks:
            block.attn.fused_attn = False
    return model


def timed_passes(step, min_iters, min_seconds, max_seconds):
    """Run ``step`` timed by CUDA events until min_iters passes and min_seconds of GPU time (or max_seconds of
    wall time): (passes, GPU seconds, the last pass's result, each pass's seconds)."""
    iters, elapsed, wall, out, times = 0, 0.0, time.perf_counter(), None, []
    while iters < min_iters or elapsed < min_seconds:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
        elapsed += times[-1]
        iters += 1
        if time.perf_counter() - wall > max_seconds:
            break
    return iters, elapsed, out, times


def measure(model, batch, size, dtype, min_iters, min_seconds, max_seconds, warmup):
    x = torch.randn(batch, 3, size, size, device='cuda', dtype=dtype)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        iters, elapsed, out, _ = timed_passes(lambda: model(x), min_iters, min_seconds, max_seconds)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20
    return dict(img_per_s=batch * iters / elapsed, peak_mib=peak, iters=iters, out=out.float())


def train_step(model, batch, size, memory_format=torch.contiguous_format, graph=False):
    """One training step of ``model`` on a fixed random batch, as a function: fp32 weights, bf16 autocast,
    cross-entropy, fused AdamW (also profile_vim.py --train's step). graph: the step replayed from a CUDA graph
    (mmssm.engine.CUDAGraphTrainStep; the optimizer capturable), the batch copied in each step as from a loader."""
    x = torch.randn(batch, 3, size, size, device='cuda').contiguous(memory_format=memory_format)
    labels = torch.randint(0, 1000, (batch,), device='cuda')
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True, capturable=graph)

    def step(images, targets):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=torch.bfloat16, cache_enabled=not graph):
            loss = F.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        return loss

    run = CUDAGraphTrainStep(model, optimizer, step) if graph else step
    return lambda: run(x, labels)


def measure_train(model, batch, size, min_iters, min_seconds, max_seconds, warmup, graph=False):
    """Training steps (:func:`train_step`): img/s and peak MiB."""
    step = train_step(model, batch, size, graph=graph)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()  # from the first step: a graph's capture allocates its pool there
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    iters, elapsed, _, times = timed_passes(step, min_iters, min_seconds, max_seconds)
    return dict(img_per_s=batch * iters / elapsed, median_img_per_s=batch / sorted(times)[len(times) // 2],
                peak_mib=torch.cuda.max_memory_allocated() / 2 ** 20, iters=iters,
                step_ms=[round(t * 1000, 2) for t in times])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='vim_t,vim_t_mamba,deit_t,deit_t_matmul,vim_s,vim_s_mamba,deit_s,'
                                            'deit_s_matmul')
    parser.add_argument('--sizes', default='224:128,512:32,1024:8,1248:8', help='size:batch,...')
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16', 'fp32'])
    parser.add_argument('--sdist-dir', default='.kit/sdist', help='mamba-ssm and causal-conv1d sdists')
    parser.add_argument('--build-dir', default='/tmp/mamba_build')
    parser.add_argument('--min-iters', type=int, default=5)
    parser.add_argument('--min-seconds', type=float, default=1.0)
    parser.add_argument('--max-seconds', type=float, default=10.0)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--train-models', default='', help='models timed in training steps too (comma-separated)')
    parser.add_argument('--train-size', default='224:128', help='size:batch of the training steps')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    logging.getLogger('mmengine').setLevel(logging.WARNING)  # no per-parameter init report
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)[args.dtype]
    names = args.models.split(',')
    sizes = [tuple(int(v) for v in item.split(':')) for item in args.sizes.split(',')]

    restore = None
    build_seconds = None
    if any(n.endswith('_mamba') for n in names):
        sys.path.insert(0, 'benchmarks')
        from mamba_kernels import build, patch_mixers
        scan_cuda, conv_cuda, build_seconds = build(args.sdist_dir, args.build_dir)
        print(f'mamba-ssm kernels built in {build_seconds:.0f} s', flush=True)

    from mmssm.ops.selective_scan import available_backends
    backends = available_backends(torch.device('cuda'))
    results = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, dtype=args.dtype,
                   mmssm_scan_backends=backends, mamba_build_seconds=build_seconds, runs=[])
    print(f'{results["gpu"]}, torch {torch.__version__}, {args.dtype}, mmssm scan backends {backends}', flush=True)
    for size, batch in sizes:
        reference = {}
        for name in names:
            model = (build_vim if name.startswith('vim') else build_deit)(name, size).cuda().to(dtype).eval()
            if name.endswith('_graph'):
                model = CUDAGraphForward(model)
            if name.endswith('_mamba'):
                restore = patch_mixers(scan_cuda, conv_cuda)
            try:
                run = measure(model, batch, size, dtype, args.min_iters, args.min_seconds, args.max_seconds,
                              args.warmup)
            except torch.cuda.OutOfMemoryError:
                run = dict(img_per_s=None, peak_mib=None, iters=0, out=None, error='OOM')
            finally:
                if restore is not None:
                    restore()
                    restore = None
            out = run.pop('out')
            base = vim_base(name)
            if name.startswith('vim') and out is not None:
                if base in reference:  # the two builds of one model must compute the same function
                    ref = reference[base]
                    run['max_rel_diff_vs_mmssm'] = ((out - ref).abs().max() / ref.abs().max()).item()
                else:
                    reference[base] = out
            run.update(model=name, size=size, batch=batch)
            results['runs'].append(run)
            speed = 'OOM' if run['img_per_s'] is None else f'{run["img_per_s"]:10.1f} img/s'
            memory = '' if run['peak_mib'] is None else f'{run["peak_mib"]:9.0f} MiB'
            extra = f'  rel diff vs mmssm {run["max_rel_diff_vs_mmssm"]:.2e}' if 'max_rel_diff_vs_mmssm' in run else ''
            print(f'{size:5d} x{batch:<4d} {name:15s} {speed} {memory}  ({run["iters"]} passes){extra}', flush=True)
            del model
            torch.cuda.empty_cache()
    size, batch = (int(v) for v in args.train_size.split(':'))
    for name in filter(None, args.train_models.split(',')):
        model = (build_vim if name.startswith('vim') else build_deit)(name.replace('_graph', ''), size).cuda().train()
        try:
            run = measure_train(model, batch, size, args.min_iters, args.min_seconds, args.max_seconds, args.warmup,
                                graph=name.endswith('_graph'))
        except torch.cuda.OutOfMemoryError:
            run = dict(img_per_s=None, peak_mib=None, iters=0, error='OOM')
        run.update(model=name, size=size, batch=batch, mode='training')
        results['runs'].append(run)
        speed = 'OOM' if run['img_per_s'] is None else (f'{run["img_per_s"]:10.1f} img/s (median step '
                                                        f'{run["median_img_per_s"]:.1f}) {run["peak_mib"]:9.0f} MiB')
        print(f'train {size:5d} x{batch:<4d} {name:15s} {speed}  ({run["iters"]} steps)', flush=True)
        del model
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)


if __name__ == '__main__':
    main()
