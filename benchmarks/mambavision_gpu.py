"""MambaVision on a GPU: inference and training throughput of mmssm's MambaVision against the same model running
on mamba-ssm's selective-scan kernel, and inference against timm's ConvNeXt and Swin, all in one run.

Models (1000-class classifiers at --size, random weights):
  mambavision_t / _s / _b   mmssm's MambaVision-T / -S / -B (any arch name of ``MambaVision.arch_zoo`` works:
                            mambavision_<arch>), scan backend ``auto``; the official classifier's end: BatchNorm on
                            the last stage, average pooling, a linear head
  mambavision_t_mamba ...   the same model with the same weights, every MambaVisionMixer's scan replaced by
                            mamba-ssm's selective_scan_fn on selective_scan_cuda, built from the mamba-ssm sdist
                            (benchmarks/mamba_kernels.py) and called with the official MambaVision arguments:
                            selective_scan_fn(x, dt, A, B, C, D.float(), z=None, delta_bias=dt_proj.bias.float(),
                            delta_softplus=True, return_last_state=None); the rest of the mixer is mmssm's
  convnext_t / _s / _b      timm convnext_tiny / small / base
  swin_t / _s / _b          timm swin_{tiny,small,base}_patch4_window7_224 (fused attention, timm's default)

Inference: bf16 weights and inputs (--dtype), ``torch.inference_mode``, batch --batch; --channels-last,
--fuse-conv-bn and --compile apply to every model of the run alike. Training: one step is
zero_grad, forward under bf16 autocast, cross-entropy on random labels, backward and fused AdamW, float32 weights,
batch --train-batch (halved on out-of-memory until it fits). Before timing a ``_mamba`` model, the same model
object is run with mmssm's scan and with mamba-ssm's, on the same random input (training: same input, labels and
drop-path masks), and the relative difference of the outputs (training: of the loss and of all gradients) is
printed and stored.

Timing: --warmup passes, then passes timed one by one with CUDA events until --min-iters passes and --min-seconds
of timed GPU time (at most --max-seconds of wall time); img/s = batch / median pass time. Peak memory:
``torch.cuda.max_memory_allocated`` over the timed passes (weights, gradients and optimizer state included).
Jobs run grouped by size (T, then S, then B), inference before training within a group; no job starts after
--deadline seconds from the script's start, so the run fits a bounded call. JSON is rewritten after every job.

    python benchmarks/mambavision_gpu.py --sdist-dir .kit/sdist --max-seconds 3
    python benchmarks/mambavision_gpu.py --no-mamba --models mambavision_t,convnext_t,swin_t --train-models ''
    python benchmarks/mambavision_gpu.py --dry-run   # CPU smoke test: tiny arch and batch, a torch stand-in kernel
"""
import argparse
import gc
import json
import logging
import math
import os
import os.path as osp
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

_HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, osp.dirname(_HERE))  # mmssm from the repository
sys.path.insert(0, _HERE)  # mamba_kernels

from mmssm.models.backbones.mamba_vision import MambaVision  # noqa: E402
from mmssm.models.layers.mamba_vision_mixer import MambaVisionMixer  # noqa: E402
from mmssm.models.layers.split_conv_mixer import SplitConvMixer  # noqa: E402
from mmssm.ops.selective_scan import available_backends, selective_scan  # noqa: E402

TIMM_NAMES = dict(
    convnext_t='convnext_tiny', convnext_s='convnext_small', convnext_b='convnext_base',
    swin_t='swin_tiny_patch4_window7_224', swin_s='swin_small_patch4_window7_224',
    swin_b='swin_base_patch4_window7_224')
DEFAULT_MODELS = ('mambavision_t,mambavision_t_mamba,convnext_t,swin_t,mambavision_s,mambavision_s_mamba,convnext_s,'
                  'swin_s,mambavision_b,mambavision_b_mamba,convnext_b,swin_b')
DEFAULT_TRAIN_MODELS = ('mambavision_t,mambavision_t_mamba,mambavision_s,mambavision_s_mamba,mambavision_b,'
                        'mambavision_b_mamba')
MAMBA_SUFFIX = '_mamba'
OOM = getattr(torch.cuda, 'OutOfMemoryError', RuntimeError)


# ---------------------------------------------------------------------- mamba-ssm's selective_scan_fn
class MambaSelectiveScan(torch.autograd.Function):
    """mamba-ssm's selective_scan_fn for z=None and no last state, on a compiled ``selective_scan_cuda`` module:
    the forward keeps the kernel's chunk states for its backward kernel, as mamba-ssm does."""

    @staticmethod
    def forward(ctx, kernels, u, delta, A, B, C, D, delta_bias, delta_softplus):
        # the kernels read the sequence axis with unit stride and take B, C as (batch, groups, N, L)
        u, delta, B, C = (t if t.stride(-1) == 1 else t.contiguous() for t in (u, delta, B, C))
        B, C, D = B.unsqueeze(1), C.unsqueeze(1), D.contiguous()
        out, states = kernels.fwd(u, delta, A, B, C, D, None, delta_bias, delta_softplus)[:2]
        ctx.kernels, ctx.delta_softplus = kernels, delta_softplus
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, states)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        grad_out = grad_out if grad_out.stride(-1) == 1 else grad_out.contiguous()
        du, ddelta, dA, dB, dC, dD, ddelta_bias = ctx.kernels.bwd(
            u, delta, A, B, C, D, None, delta_bias, grad_out, states, None, None, ctx.delta_softplus, False)[:7]
        return None, du, ddelta, dA, dB.squeeze(1), dC.squeeze(1), dD, ddelta_bias, None


def selective_scan_fn(kernels, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=None):
    """mamba-ssm's ``selective_scan_fn`` signature (with the kernel module first), for what MambaVision uses."""
    if z is not None or return_last_state or D is None or delta_bias is None:
        raise NotImplementedError('this stand-in of selective_scan_fn covers MambaVision\'s call only: z=None, '
                                  'return_last_state=None, D and delta_bias given')
    return MambaSelectiveScan.apply(kernels, u, delta, A, B, C, D, delta_bias, delta_softplus)


class MixerOnMambaKernel(MambaVisionMixer):
    """A MambaVisionMixer whose scan is mamba-ssm's, called with the official MambaVision arguments (A, D and the
    dt bias in float32, B and C made contiguous); the projections and convolutions are mmssm's, so the two builds
    differ in the scan call only. ``mamba_kernels`` (the compiled module) is set on the instance. Its forward is
    the transposing one of the official code (mmssm's channels-last path is mmssm's own)."""

    forward = SplitConvMixer.forward

    def ssm(self, x):
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self.dt_proj(dt).transpose(1, 2)
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.float())
        return selective_scan_fn(self.mamba_kernels, x, dt, A, B, C, self.D.float(), z=None,
                                 delta_bias=self.dt_proj.bias.float(), delta_softplus=True, return_last_state=None)


def use_scan(model, kernels):
    """Switch every MambaVisionMixer of ``model`` to mamba-ssm's scan (``kernels``) or back to mmssm's (None);
    returns how many mixers were switched."""
    count = 0
    for module in model.modules():
        if isinstance(module, MambaVisionMixer):
            module.__class__ = MambaVisionMixer if kernels is None else MixerOnMambaKernel
            module.mamba_kernels = kernels
            count += 1
    return count


def _check_kernel_inputs(u, delta, A, B, C, D, delta_bias, dout=None):
    """The input checks of selective_scan_cuda's fwd / bwd that MambaVision's call meets (real A, grouped B and C),
    so that the dry run fails where the compiled kernel would."""
    batch, dim, length = u.shape
    for name, tensor in dict(u=u, delta=delta, B=B, C=C, dout=dout).items():
        if tensor is not None and tensor.stride(-1) != 1 and tensor.size(-1) != 1:
            raise RuntimeError(f'kernel check: {name} needs unit stride along the sequence, got {tensor.stride()}')
    for name, tensor in dict(delta=delta, B=B, C=C, dout=dout).items():
        if tensor is not None and tensor.dtype != u.dtype:
            raise RuntimeError(f'kernel check: {name} must have u\'s dtype {u.dtype}, got {tensor.dtype}')
    for name, tensor in dict(A=A, D=D, delta_bias=delta_bias).items():
        if tensor is not None and tensor.dtype != torch.float32:
            raise RuntimeError(f'kernel check: {name} must be float32, got {tensor.dtype}')
    if delta.shape != u.shape or A.shape[0] != dim or (D is not None and D.shape != (dim,)):
        raise RuntimeError('kernel check: shapes of delta, A or D do not match u')
    for name, tensor in dict(B=B, C=C).items():
        if tensor.dim() != 4 or tensor.shape[0] != batch or tensor.shape[2:] != (A.shape[1], length):
            raise RuntimeError(f'kernel check: {name} must be (batch, groups, N, L), got {tuple(tensor.shape)}')


class TorchStandInKernels:
    """The dry run's stand-in for ``selective_scan_cuda``: its fwd / bwd signatures and input checks, mmssm's torch
    scan inside, so the mamba-kernel build's wiring (arguments, layouts, gradients) runs without CUDA."""

    @staticmethod
    def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        _check_kernel_inputs(u, delta, A, B, C, D, delta_bias)
        out = selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                             backend='torch')
        states = torch.zeros(u.shape[0], u.shape[1], 1, 2 * A.shape[1], device=u.device)
        return [out, states]

    @staticmethod
    def bwd(u, delta, A, B, C, D, z, delta_bias, dout, states, out, dz, delta_softplus, recompute_out_z):
        _check_kernel_inputs(u, delta, A, B, C, D, delta_bias, dout)
        inputs = [t.detach().requires_grad_() for t in (u, delta, A, B, C, D, delta_bias)]
        with torch.enable_grad():
            out = selective_scan(*inputs[:5], D=inputs[5], delta_bias=inputs[6], delta_softplus=delta_softplus,
                                 backend='torch')
        return list(torch.autograd.grad(out, inputs, dout))


# ---------------------------------------------------------------------- models
class Classifier(nn.Module):
    """A MambaVision backbone as the official classifier ends it: BatchNorm on the last stage, average pooling,
    a linear head."""

    def __init__(self, arch, classes=1000):
        super().__init__()
        self.backbone = MambaVision(arch, out_indices=3, out_norm='bn', out_type='avg_featmap')
        self.head = nn.Linear(self.backbone.num_features[3], classes)

    def forward(self, x):
        return self.head(self.backbone(x)[0])


def parse_name(name):
    """(family, base name, size letter, on mamba-ssm's kernel) of a model name, or a ValueError."""
    mamba = name.endswith(MAMBA_SUFFIX)
    base = name[:-len(MAMBA_SUFFIX)] if mamba else name
    if base.startswith('mambavision_'):
        arch = base[len('mambavision_'):]
        if arch not in MambaVision.arch_zoo:
            raise ValueError(f'unknown MambaVision arch {arch!r} in {name!r}; choose one of '
                             f'{sorted(MambaVision.arch_zoo)}')
        return 'mambavision', base, arch, mamba
    if base in TIMM_NAMES and not mamba:
        return 'timm', base, base.rsplit('_', 1)[1], False
    raise ValueError(f'unknown model {name!r}: use mambavision_<arch>[{MAMBA_SUFFIX}] or one of {sorted(TIMM_NAMES)}')


def build_model(name, size, device):
    family, base, arch, _ = parse_name(name)
    torch.manual_seed(0)
    with torch.device(device):  # initialized where it runs: no slow CPU init of the large models
        if family == 'mambavision':
            return Classifier(arch)
        import timm
        kwargs = dict(img_size=size) if base.startswith('swin') and size != 224 else {}
        return timm.create_model(TIMM_NAMES[base], num_classes=1000, **kwargs)


def relative_error(out, ref):
    """||out - ref|| / ||ref|| and max|out - ref| / max|ref|, in float32."""
    out, ref = out.float(), ref.float()
    return ((out - ref).norm() / ref.norm()).item(), ((out - ref).abs().max() / ref.abs().max()).item()


# ---------------------------------------------------------------------- timing
def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_passes(step, device, args):
    """Run ``step`` until min_iters passes and min_seconds of timed time (or max_seconds of wall time);
    returns the per-pass times in seconds."""
    times = []
    wall = time.perf_counter()
    while len(times) < args.min_iters or sum(times) < args.min_seconds:
        if device.type == 'cuda':
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        if time.perf_counter() - wall > args.max_seconds:
            break
    return times


def reset_peak(device):
    synchronize(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device):
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else None


def summarize(times, batch):
    median = statistics.median(times)
    return dict(img_per_s=batch / median, ms_median=1000 * median, ms_min=1000 * min(times),
                ms_max=1000 * max(times), iters=len(times))


def layout(args):
    return torch.channels_last if args.channels_last else torch.contiguous_format


def run_inference(name, kernels, args, device, dtype):
    _, _, _, on_mamba = parse_name(name)
    model = build_model(name, args.size, device).eval()
    result = dict(params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    if args.fuse_conv_bn:  # in float32, before the cast
        from mmcv.cnn import fuse_conv_bn
        fuse_conv_bn(model)
    model = model.to(dtype).to(memory_format=layout(args))
    generator = torch.Generator(device).manual_seed(1)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device, dtype=dtype, generator=generator)
    x = x.contiguous(memory_format=layout(args))
    with torch.inference_mode():
        if on_mamba:  # same object, same input: mmssm's scan first, then mamba-ssm's
            reference = model(x).float()
            result['mixers_switched'] = use_scan(model, kernels)
            result['rel_err'], result['max_rel_err'] = relative_error(model(x), reference)
            print(f'    {name}: outputs against mmssm\'s scan, relative error {result["rel_err"]:.2e} '
                  f'(max-abs based {result["max_rel_err"]:.2e}), {result["mixers_switched"]} mixers', flush=True)
            del reference
        forward = model
        if args.compile:  # after the scan switch: a _mamba model compiles around mamba-ssm's scan (graph breaks)
            forward = torch.compile(model)
            compile_start = time.perf_counter()
            forward(x)
            result['compile_seconds'] = time.perf_counter() - compile_start
        for _ in range(args.warmup):
            forward(x)
        reset_peak(device)
        times = time_passes(lambda: forward(x), device, args)
    result.update(summarize(times, args.batch), batch=args.batch, peak_mib=peak_mib(device))
    return result


def flat_grad(model):
    return torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])


def run_training(name, kernels, args, device, dtype):
    _, _, _, on_mamba = parse_name(name)
    model = build_model(name, args.size, device).train().to(memory_format=layout(args))
    result = dict(params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    batch = args.train_batch
    while True:
        out_of_memory = False
        try:
            result.update(_train(model, name, on_mamba, kernels, batch, args, device, dtype))
            return result
        except OOM:
            if device.type != 'cuda' or batch <= 8:
                raise
            out_of_memory = True
        if out_of_memory:  # outside the except block, so that the failed step's tensors are freed
            result.setdefault('oom_batches', []).append(batch)
            print(f'    {name}: out of memory at batch {batch}, trying {batch // 2}', flush=True)
            use_scan(model, None)
            model.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()
            batch //= 2


def _train(model, name, on_mamba, kernels, batch, args, device, dtype):
    generator = torch.Generator(device).manual_seed(2)
    x = torch.randn(batch, 3, args.size, args.size, device=device, generator=generator)
    x = x.contiguous(memory_format=layout(args))
    labels = torch.randint(0, 1000, (batch,), device=device, generator=generator)
    result = dict(batch=batch)

    def forward_backward():
        with torch.autocast(device.type, dtype=dtype):
            loss = F.cross_entropy(model(x), labels)
        loss.backward()
        return loss

    if on_mamba:  # same object, input, labels and drop-path masks: mmssm's scan first, then mamba-ssm's
        torch.manual_seed(3)
        reference_loss = forward_backward().item()
        reference_grad = flat_grad(model)
        model.zero_grad(set_to_none=True)
        result['mixers_switched'] = use_scan(model, kernels)
        torch.manual_seed(3)
        loss = forward_backward().item()
        result['loss_rel_err'] = abs(loss - reference_loss) / abs(reference_loss)
        result['grad_rel_err'], result['grad_max_rel_err'] = relative_error(flat_grad(model), reference_grad)
        model.zero_grad(set_to_none=True)
        del reference_grad
        print(f'    {name}: against mmssm\'s scan, loss relative error {result["loss_rel_err"]:.2e}, gradients '
              f'{result["grad_rel_err"]:.2e} (max-abs based {result["grad_max_rel_err"]:.2e}), '
              f'{result["mixers_switched"]} mixers', flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == 'cuda')

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    reset_peak(device)
    times = time_passes(step, device, args)
    result.update(summarize(times, batch), peak_mib=peak_mib(device))
    return result


# ---------------------------------------------------------------------- report
def ratio(runs, mode, numerator, denominator):
    a, b = runs.get((mode, numerator)), runs.get((mode, denominator))
    if not a or not b or not a.get('img_per_s') or not b.get('img_per_s'):
        return None
    return a['img_per_s'] / b['img_per_s']


def ratios(results):
    runs = {(r['mode'], r['model']): r for r in results['runs']}
    table = []
    for arch in results['size_groups']:
        mmssm = f'mambavision_{arch}'
        row = dict(arch=arch)
        for mode in ('inference', 'training'):
            row[f'{mode}_mmssm_over_mamba'] = ratio(runs, mode, mmssm, mmssm + MAMBA_SUFFIX)
            for family in ('convnext', 'swin'):
                row[f'{mode}_mmssm_over_{family}'] = ratio(runs, mode, mmssm, f'{family}_{arch}')
        if any(v is not None for k, v in row.items() if k != 'arch'):
            table.append(row)
    return table


def fmt(value, spec):
    """format(value, spec), or a '-' as wide as the spec asks for a missing value."""
    width = ''.join(ch for ch in spec.split('.')[0] if ch.isdigit())
    return format('-', f'>{width}') if value is None else format(value, spec)


def print_tables(results):
    print()
    print(f'{results["device"]}, torch {results["torch"]}, timm {results["timm"]}, mmssm scan backends '
          f'{results["mmssm_scan_backends"]}, mamba-ssm kernel build {fmt(results["mamba_build_seconds"], ".0f")} s')
    print(f'size {results["size"]}; inference {results["dtype"]} weights and inputs; training fp32 weights + '
          f'{results["dtype"]} autocast, AdamW; img/s from the median pass')
    print(f'{"mode":9s} {"model":22s} {"batch":>5s} {"img/s":>9s} {"ms":>8s} {"peak MiB":>9s} {"params M":>8s} '
          f'{"passes":>6s}  rel err vs mmssm')
    for r in results['runs']:
        if r.get('error'):
            print(f'{r["mode"]:9s} {r["model"]:22s} {"":5s} {r["error"]}')
            continue
        check = r.get('rel_err', r.get('grad_rel_err'))
        check = '' if check is None else (f'{check:.1e}' if r['mode'] == 'inference' else
                                          f'grad {check:.1e}, loss {r["loss_rel_err"]:.1e}')
        print(f'{r["mode"]:9s} {r["model"]:22s} {r["batch"]:5d} {r["img_per_s"]:9.1f} {r["ms_median"]:8.2f} '
              f'{fmt(r["peak_mib"], "9.0f")} {r["params_m"]:8.1f} {r["iters"]:6d}  {check}')
    if results['ratios']:
        target = results['target']
        print(f'img/s ratios of mmssm\'s MambaVision (target for inference mmssm/mamba: >= {target})')
        print(f'{"arch":6s} {"infer mmssm/mamba":>18s} {"target":>7s} {"/ConvNeXt":>10s} {"/Swin":>7s} '
              f'{"train mmssm/mamba":>18s}')
        for row in results['ratios']:
            speedup = row['inference_mmssm_over_mamba']
            verdict = '-' if speedup is None else ('met' if speedup >= target else 'missed')
            print(f'{row["arch"]:6s} {fmt(speedup, "18.2f")} {verdict:>7s} '
                  f'{fmt(row["inference_mmssm_over_convnext"], "10.2f")} '
                  f'{fmt(row["inference_mmssm_over_swin"], "7.2f")} {fmt(row["training_mmssm_over_mamba"], "18.2f")}')
    if results['skipped']:
        print(f'not run (past --deadline {results["deadline"]} s): {", ".join(results["skipped"])}')


def write_json(results, path):
    if not path:
        return
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(results, f, indent=1)
    os.replace(path + '.tmp', path)


# ---------------------------------------------------------------------- main
def split_names(text):
    return [n for n in text.split(',') if n]


def plan(models, train_models):
    """Jobs grouped by size letter in order of first appearance, inference before training in each group."""
    groups = []
    for name in models + train_models:
        arch = parse_name(name)[2]
        if arch not in groups:
            groups.append(arch)
    jobs = [(mode, name) for arch in groups for mode, names in (('inference', models), ('training', train_models))
            for name in names if parse_name(name)[2] == arch]
    return groups, jobs


def main(argv=None):
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default=None, help=f'inference models, comma-separated (default {DEFAULT_MODELS})')
    parser.add_argument('--train-models', default=None,
                        help=f'training models, comma-separated, \'\' for none (default {DEFAULT_TRAIN_MODELS})')
    parser.add_argument('--batch', type=int, default=None, help='inference batch (default 128)')
    parser.add_argument('--train-batch', type=int, default=None,
                        help='training batch (default 128), halved on out-of-memory')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--dtype', default='bf16', choices=['bf16', 'fp16'],
                        help='inference weights and inputs; training autocast dtype')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--channels-last', action='store_true',
                        help='every model and input in torch.channels_last (cuDNN\'s layout), for all models alike')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='inference: fold every BatchNorm into the convolution before it (mmcv.cnn.fuse_conv_bn), '
                             'for all models alike')
    parser.add_argument('--compile', action='store_true',
                        help='inference: time torch.compile(model) (default mode) for all models alike; mmssm\'s '
                             'scan is a custom op (one graph), mamba-ssm\'s autograd.Function breaks the graph')
    parser.add_argument('--sdist-dir', default='.kit/sdist', help='folder holding mamba_ssm-*.tar.gz')
    parser.add_argument('--build-dir', default='/tmp/mamba_build',
                        help='mamba-ssm kernel build folder (a finished build there is reused)')
    parser.add_argument('--no-mamba', action='store_true',
                        help='skip building mamba-ssm\'s kernel and drop every *_mamba model')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--min-iters', type=int, default=10)
    parser.add_argument('--min-seconds', type=float, default=1.0)
    parser.add_argument('--max-seconds', type=float, default=5.0, help='wall-time budget of one measurement')
    parser.add_argument('--deadline', type=float, default=420.0,
                        help='start no job later than this many seconds after the script started (build included)')
    parser.add_argument('--target', type=float, default=1.3,
                        help='inference speed-up of mmssm over the mamba-kernel build that the table checks')
    parser.add_argument('--out', default=None,
                        help='JSON file (default $OUT/mambavision_gpu.json when OUT is set, else none)')
    parser.add_argument('--dry-run', action='store_true',
                        help='smoke test on any device: MambaVision "test" arch, batch 2, a torch stand-in for '
                             'mamba-ssm\'s kernel, timm models only if timm imports')
    args = parser.parse_args(argv)
    logging.getLogger('mmengine').setLevel(logging.WARNING)

    if args.dry_run:
        if args.device == 'cuda' and not torch.cuda.is_available():
            args.device = 'cpu'
        args.models = args.models if args.models is not None else \
            'mambavision_test,mambavision_test_mamba,convnext_t,swin_t'
        args.train_models = args.train_models if args.train_models is not None else \
            'mambavision_test,mambavision_test_mamba'
        args.batch, args.train_batch = args.batch or 2, args.train_batch or 2
        args.warmup, args.min_iters, args.min_seconds = 1, 2, 0.
        args.max_seconds = min(args.max_seconds, 2.)
    models = split_names(args.models if args.models is not None else DEFAULT_MODELS)
    train_models = split_names(args.train_models if args.train_models is not None else DEFAULT_TRAIN_MODELS)
    args.batch, args.train_batch = args.batch or 128, args.train_batch or 128
    if args.no_mamba:
        models, train_models = ([n for n in names if not n.endswith(MAMBA_SUFFIX)] for names in (models, train_models))
    if args.out is None and os.environ.get('OUT'):
        args.out = osp.join(os.environ['OUT'], 'mambavision_gpu.json')
    groups, jobs = plan(models, train_models)  # checks every name before anything slow starts
    device = torch.device(args.device)
    dtype = dict(bf16=torch.bfloat16, fp16=torch.float16)[args.dtype]
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # the timm convnets' usual setting; applies to every model alike

    try:
        import timm
        timm_version = timm.__version__
    except ImportError as error:
        timm_version = None
        if any(parse_name(n)[0] == 'timm' for _, n in jobs):
            if not args.dry_run:
                raise SystemExit('timm is needed for the convnext_* / swin_* models (pip install timm), or leave '
                                 'them out of --models / --train-models') from error
            print('timm is not installed: the dry run leaves out the timm models')
            jobs = [(mode, n) for mode, n in jobs if parse_name(n)[0] != 'timm']

    kernels, build_seconds = None, None
    if any(parse_name(n)[3] for _, n in jobs):
        if args.dry_run:
            kernels = TorchStandInKernels
        elif device.type != 'cuda':
            raise SystemExit(f'the {MAMBA_SUFFIX} models need CUDA (mamba-ssm\'s kernel): use --device cuda, '
                             '--no-mamba, or --dry-run for the torch stand-in')
        else:
            from mamba_kernels import build
            print(f'building mamba-ssm\'s selective_scan_cuda from {args.sdist_dir} into {args.build_dir} ...',
                  flush=True)
            kernels, _, build_seconds = build(args.sdist_dir, args.build_dir, conv=False)
            print(f'mamba-ssm selective_scan_cuda ready in {build_seconds:.0f} s', flush=True)

    backends = available_backends(device)
    results = dict(
        device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu', torch=torch.__version__,
        timm=timm_version, mmssm_scan_backends=backends, mamba_build_seconds=build_seconds, dry_run=args.dry_run,
        mamba_kernel='torch stand-in (dry run)' if args.dry_run else 'mamba-ssm selective_scan_cuda',
        size=args.size, dtype=args.dtype, args=vars(args), size_groups=groups, deadline=args.deadline,
        target=args.target,
        runs=[], skipped=[], ratios=[])
    print(f'{results["device"]}, torch {torch.__version__}, timm {timm_version}, mmssm scan backends {backends}',
          flush=True)
    if device.type == 'cuda' and backends[0] != 'cuda':
        print('NOTE: mmssm\'s CUDA scan is not built, so `auto` uses the Triton or torch scan; build it first with '
              '`python -m mmssm.ops.selective_scan.cuda_scan --build`', flush=True)

    for mode, name in jobs:
        if time.perf_counter() - start > args.deadline:
            results['skipped'].append(f'{mode} {name}')
            continue
        print(f'{mode} {name} ...', flush=True)
        runner = run_inference if mode == 'inference' else run_training
        try:
            run = runner(name, kernels, args, device, dtype)
        except OOM as error:
            if device.type != 'cuda':
                raise
            run = dict(error=f'out of memory: {str(error).splitlines()[0]}')
        run.update(mode=mode, model=name)
        results['runs'].append(run)
        if 'error' not in run:
            print(f'    {run["img_per_s"]:.1f} img/s, {run["ms_median"]:.2f} ms per pass (median of {run["iters"]}), '
                  f'peak {fmt(run["peak_mib"], ".0f")} MiB, batch {run["batch"]}', flush=True)
        else:
            print(f'    {run["error"]}', flush=True)
        gc.collect()
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        results['ratios'] = ratios(results)
        results['elapsed_seconds'] = time.perf_counter() - start
        write_json(results, args.out)
    print_tables(results)
    print(f'total {math.ceil(time.perf_counter() - start)} s' + (f', JSON in {args.out}' if args.out else ''))


if __name__ == '__main__':
    main()
