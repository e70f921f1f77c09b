"""Why ToPPlainMamba's bf16 autocast output differs from float32 on a GPU (test_variants_gpu.py): the relative
error with pruning on (as the test), with keep_ratio 1 (no pruning), and with the torch scan backend.

    python benchmarks/diagnose_top_bf16.py
"""
import copy
import os
import sys

import torch

sys.path.insert(0, '.')
sys.path.insert(0, 'tests/test_models/test_backbones')


def error(cfg, backend='auto'):
    import mmssm.models  # noqa: F401
    from mmssm.registry import MODELS
    os.environ['MMSSM_SCAN_BACKEND'] = backend
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg)).cuda().eval()
    images = torch.randn(2, 3, 70, 90, device='cuda')
    with torch.no_grad():
        reference = model(images)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            low = model(images)
    return max(((b.float() - a).norm() / a.norm()).item() for a, b in zip(reference, low))


def main():
    from test_variants_gpu import CASES
    cfg = CASES['top_plainmamba']
    unpruned = dict(cfg, token_pruning=dict(cfg['token_pruning'], keep_ratio=1.0))
    for label, c, backend in (('top_plainmamba', cfg, 'auto'), ('keep_ratio=1', unpruned, 'auto'),
                              ('torch backend', cfg, 'torch'), ('triton backend', cfg, 'triton'),
                              ('top_vim', CASES['top_vim'], 'auto')):
        print(f'{label:16s} bf16 vs fp32 relative error {error(c, backend):.4f}', flush=True)


if __name__ == '__main__':
    main()
