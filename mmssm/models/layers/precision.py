import torch


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is in a lower precision; float64 stays float64 (the reference runs), as the SSM
    parameters, norm statistics and table resizing need."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
