"""2:4 semi-structured sparsity for Linear layers: in every group of 4 consecutive input weights of an output row,
keep the 2 of largest magnitude (the pattern NVIDIA's sparse tensor cores run, Ampere and later), and convert to
``torch.sparse.to_sparse_semi_structured`` where the GPU supports it."""
import torch
from torch import nn


def eligible_linears(model: nn.Module, min_features: int = 64) -> list:
    """Names of Linear layers 2:4 can apply to: both dimensions at least ``min_features`` (smaller layers gain
    nothing), out_features a multiple of 32 and in_features of 64 (the tiles of torch's semi-structured kernels for
    fp16/bf16, CUTLASS and cuSPARSELt: a 1000-class head, 1000 rows, is refused there)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and module.in_features % 64 == 0 and module.out_features % 32 == 0
            and min(module.in_features, module.out_features) >= min_features]


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Boolean mask of ``weight`` (out, in) keeping the 2 largest |w| of each group of 4 along the input dim."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        raise ValueError(f'mask_2_4: needs a 2-D weight with in_features divisible by 4, got {tuple(weight.shape)}.')
    groups = weight.detach().abs().reshape(weight.shape[0], -1, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(weight.shape)


def is_2_4(weight: torch.Tensor) -> bool:
    """Whether every group of 4 along the input dim has at most 2 non-zeros."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


@torch.no_grad()
def prune_2_4(model: nn.Module, names=None) -> list:
    """Zero every eligible Linear weight (or those in ``names``) to the 2:4 pattern by magnitude, in place;
    return the names pruned."""
    names = eligible_linears(model) if names is None else list(names)
    for name in names:
        linear = model.get_submodule(name)
        linear.weight.mul_(mask_2_4(linear.weight))
    return names


def semi_structured_supported(device=None) -> bool:
    """CUDA with compute capability >= 8.0 and a torch that has ``to_sparse_semi_structured``."""
    if not torch.cuda.is_available() or not hasattr(torch.sparse, 'to_sparse_semi_structured'):
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


@torch.no_grad()
def to_semi_structured(model: nn.Module, names) -> list:
    """Replace the weights of Linear layers ``names`` (already 2:4, fp16/bf16, on CUDA) by semi-structured sparse
    tensors, so their matmuls run on the sparse tensor cores. Raises a ValueError naming what is missing."""
    if not semi_structured_supported():
        raise ValueError('to_semi_structured: needs a CUDA GPU of compute capability >= 8.0 and '
                         'torch.sparse.to_sparse_semi_structured (torch >= 2.1); on CPU only prune_2_4 applies.')
    converted = []
    for name in names:
        linear = model.get_submodule(name)
        weight = linear.weight
        if weight.dtype not in (torch.float16, torch.bfloat16) or not weight.is_cuda:
            raise ValueError(f'to_semi_structured: {name}.weight must be fp16/bf16 on CUDA, got {weight.dtype} on '
                             f'{weight.device}; call model.half() / .bfloat16() and .cuda() first.')
        if not is_2_4(weight):
            raise ValueError(f'to_semi_structured: {name}.weight is not 2:4 sparse; call prune_2_4 first.')
        linear.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(weight), requires_grad=False)
        converted.append(name)
    return converted
