"""Checks of the fused kernels (mmssm.ops.fused_add_norm, ...) against float64 torch references, forward and every
gradient. Run in a subprocess by test_fused.py: on CPU through Triton's interpreter (TRITON_INTERPRET=1, read when
the kernels are defined), or on CUDA compiled (``python fused_checks.py add_norm cuda``). Prints one line per
check and exits non-zero on the first failure."""
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'test_selective_scan'))

from helpers import assert_close  # noqa: E402

from mmssm.models.layers import RMSNorm, add_norm  # noqa: E402
from mmssm.ops.fused_add_norm import add_norm_reference, fused_add_norm  # noqa: E402


def check_add_norm(device):
    generator = torch.Generator().manual_seed(0)

    def randn(*shape, dtype):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device, dtype)

    # 2 x 23 rows (past one backward program's 32 rows, not a multiple), 45 channels (not a power of two)
    shape = (2, 23, 45)
    for is_rms, has_res, in_fp32, affine, dtype in itertools.product(
            (True, False), (True, False), (True, False), (True, False), (torch.float32, torch.bfloat16)):
        inputs = [randn(*shape, dtype=dtype), randn(*shape, dtype=torch.float32 if in_fp32 else dtype)
                  if has_res else None, randn(45, dtype=torch.float32) if affine else None,
                  randn(45, dtype=torch.float32) if affine and not is_rms else None]
        leaves = [t.clone().requires_grad_() if t is not None else None for t in inputs]
        out, res = fused_add_norm(*leaves, eps=1e-5, is_rms=is_rms, residual_in_fp32=in_fp32)
        ref = [t.double().requires_grad_() if t is not None else None for t in inputs]
        out_ref, res_ref = add_norm_reference(*ref, 1e-5, is_rms, in_fp32, torch.float64)
        label = f'add_norm rms={is_rms} residual={has_res} fp32={in_fp32} affine={affine} {dtype}'
        assert out.dtype == (torch.float32 if affine else dtype), f'{label}: out dtype {out.dtype}'
        assert res.dtype == (torch.float32 if in_fp32 else dtype), f'{label}: residual dtype {res.dtype}'
        # bf16: the residual is rounded once (as stored), the output once more
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert_close(f'{label} residual', res_ref, res, atol=tol * res_ref.abs().max().item())
        assert_close(f'{label} out', out_ref, out, atol=tol * out_ref.abs().max().item())
        with torch.no_grad():  # inference: the kernel called without the autograd Function, same results
            direct = fused_add_norm(*inputs, eps=1e-5, is_rms=is_rms, residual_in_fp32=in_fp32)
        assert torch.equal(direct[0], out) and torch.equal(direct[1], res), f'{label}: direct call'
        weights = [randn(*out.shape, dtype=torch.float64), randn(*res.shape, dtype=torch.float64)]
        names = [i for i, t in enumerate(leaves) if t is not None]
        grads = torch.autograd.grad((out.double() * weights[0]).sum() + (res.double() * weights[1]).sum(),
                                    [leaves[i] for i in names])
        ref_grads = torch.autograd.grad((out_ref * weights[0]).sum() + (res_ref * weights[1]).sum(),
                                        [ref[i] for i in names])
        for i, grad, ref_grad in zip(names, grads, ref_grads):
            name = ('hidden', 'residual', 'weight', 'bias')[i]
            assert grad.dtype == inputs[i].dtype, f'{label} d{name}: dtype {grad.dtype}'
            assert_close(f'{label} d{name}', ref_grad, grad, atol=tol * ref_grad.abs().max().item())
    print('ok add_norm kernels', flush=True)
    # the layer function dispatches to the kernel and matches its own torch path
    norm = RMSNorm(45).to(device)
    hidden, residual = randn(*shape, dtype=torch.float32), randn(*shape, dtype=torch.float32)
    fused = add_norm(hidden, residual, norm, True, fused=True)
    plain = add_norm(hidden, residual, norm, True, fused=False)
    for a, b in zip(fused, plain):
        assert_close('add_norm layer', b, a, atol=1e-5 * b.abs().max().item())
    print('ok add_norm layer', flush=True)


def check_hybrid_block(device):
    """A MambaVision hybrid block (attention, layer scales) with its add + LayerNorm fused equals the unfused block:
    output and every gradient, float32."""
    import copy

    from mmssm.models.backbones.mamba_vision import HybridBlock
    torch.manual_seed(0)
    unfused = HybridBlock(24, True, 2, 2, {}, layer_scale=0.5, fused_add_norm=False).to(device)
    for norm in (unfused.norm1, unfused.norm2):  # non-trivial norm affines
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        torch.nn.init.uniform_(norm.bias, -0.5, 0.5)
    fused = copy.deepcopy(unfused)
    fused.fused_add_norm = True
    x = torch.randn(3, 10, 24, device=device)
    outs = [block(x) for block in (fused, unfused)]
    assert_close('hybrid block out', outs[1], outs[0], atol=1e-5 * outs[1].abs().max().item())
    grads = [torch.autograd.grad(out.square().sum(), list(block.parameters())) for out, block in zip(outs,
                                                                                                    (fused, unfused))]
    for (name, _), a, b in zip(unfused.named_parameters(), *grads):
        assert_close(f'hybrid block d{name}', b, a, atol=1e-4 * b.abs().max().item())
    print('ok hybrid block fused add + norm', flush=True)


if __name__ == '__main__':
    part, device = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else 'cpu')
    if device == 'cpu':
        assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1 on CPU'
    {'add_norm': check_add_norm, 'hybrid_block': check_hybrid_block}[part](device)
