"""DyVim on a GPU: masked == gathered on the GPU scan backend, a bf16 training step, and throughput at batch 1024
bf16 for Vim-T/S (dense, token pruning, token pruning + 20 % of the scan directions off). Writes $OUT/dyvm_gpu.json.

    python benchmarks/dyvm_gpu.py
"""
import json
import os
import time

import torch

import mmssm.models  # noqa: F401
from mmssm.ops.selective_scan import available_backends
from mmssm.registry import MODELS

dev = 'cuda'
res = dict(device=torch.cuda.get_device_name(), backends=available_backends(dev))


def build(kind, arch, **kw):
    torch.manual_seed(0)
    m = MODELS.build(dict(type=f'mmssm.{kind}', arch=arch, **kw))
    m.init_weights()
    return m.to(dev)


# 1. masked == gathered, float32, random per-sample gates
m = build('DyVim', 'small', keep_ratio=0.7, out_type='raw').eval()
g = torch.Generator().manual_seed(1)
with torch.no_grad():
    for gate in m.direction_gates:
        gate.weight.copy_(torch.randn(gate.weight.shape, generator=g))
        gate.bias.zero_()
x = torch.randn(8, 3, 224, 224, device=dev)
with torch.no_grad():
    gathered = m(x)[0]
    masked = m.forward_masked(x, stochastic=False)
res['fp32_masked_vs_gathered_max_abs'] = (gathered - masked['outputs'][0]).abs().max().item()
res['fp32_output_max_abs'] = gathered.abs().max().item()
res['mean_gate'] = masked['gates'].mean().item()

# 2. bf16 training step
m.train()
with torch.autocast('cuda', torch.bfloat16):
    out = m.forward_masked(x)
    loss = out['outputs'][0].float().square().mean() + sum(d.mean() for d in out['decisions']) + out['gates'].mean()
loss.backward()
res['bf16_train_finite'] = bool(all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None))
res['predictor_grad_norm'] = sum(p.grad.norm().item() for p in m.token_predictors.parameters())


def bench(model, batch=1024, iters=10):
    x = torch.randn(batch, 3, 224, 224, device=dev)
    with torch.no_grad(), torch.autocast('cuda', torch.bfloat16):
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        torch.cuda.synchronize()
    return round(batch * iters / (time.perf_counter() - start), 1)


for arch, rho in (('tiny', 0.9), ('small', 0.7)):
    dense = build('Vim', arch).eval()
    dy = build('DyVim', arch, keep_ratio=rho).eval()
    dy.load_state_dict(dense.state_dict(), strict=False)
    row = dict(dense=bench(dense), tokens_only=bench(dy))
    # 20 % of the (block, direction) pairs off for the whole batch (the loss's 0.8 target), chosen at random
    off = torch.randperm(2 * dy.depth, generator=torch.Generator().manual_seed(0))[: round(0.2 * 2 * dy.depth)]
    with torch.no_grad():
        for k in off.tolist():
            dy.direction_gates[k // 2].bias[k % 2] = -5.0
    row['tokens_and_20pct_directions_off'] = bench(dy)
    res[f'throughput_bf16_b1024_{arch}'] = row
    del dense, dy
    torch.cuda.empty_cache()

print(json.dumps(res, indent=1))
os.makedirs(os.environ.get('OUT', '/tmp'), exist_ok=True)
with open(os.path.join(os.environ.get('OUT', '/tmp'), 'dyvm_gpu.json'), 'w') as f:
    json.dump(res, f, indent=1)
