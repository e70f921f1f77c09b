"""Why ToPPlainMamba's bf16 autocast output differs from float32 on a GPU (test_variants_gpu.py).

Replays the test (train-mode forward + backward, then eval float32 vs bf16) and reports, per model: the relative
error, whether bf16 kept the same tokens as float32, and the error when bf16 is made to keep float32's tokens
(so a flip of the discrete top-k selection is told apart from a numerical error of the kernels).

    python benchmarks/diagnose_top_bf16.py
"""
import copy
import sys

import torch

sys.path.insert(0, '.')
sys.path.insert(0, 'tests/test_models/test_backbones')


def error(reference, low):
    return max(((b.float() - a).norm() / a.norm()).item() for a, b in zip(reference, low))


def diagnose(name, cfg, device='cuda'):
    from test_variants_gpu import SIZE, selections

    import mmssm.models  # noqa: F401
    from mmssm.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg)).to(device).train()
    images = torch.randn(2, 3, *SIZE, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):  # the test's train step (updates BN running statistics)
        sum(o.float().square().mean() for o in model(images)).backward()
    model.eval()
    fp32, bf16 = [], []
    with torch.no_grad():
        with selections(record=fp32):
            reference = model(images)
        with selections(record=bf16), torch.autocast(device, dtype=torch.bfloat16):
            low = model(images)
        with selections(replay=fp32), torch.autocast(device, dtype=torch.bfloat16):
            forced = model(images)
    same = all(torch.equal(a, b) for a, b in zip(fp32, bf16))
    differ = sum(int((a != b).any(dim=1).sum()) for a, b in zip(fp32, bf16))
    print(f'{name:16s} {device}: bf16 vs fp32 {error(reference, low):.4f}; same kept tokens: {same} '
          f'({differ} sample-selections differ); bf16 with fp32 tokens {error(reference, forced):.4f}', flush=True)


def main():
    from test_variants_gpu import CASES
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    for name in ('top_plainmamba', 'top_vim'):
        diagnose(name, CASES[name], device)


if __name__ == '__main__':
    main()
