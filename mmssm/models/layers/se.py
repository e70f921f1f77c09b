import torch
from torch import nn

from mmssm.registry import MODELS


@MODELS.register_module()
class TokenSqueezeExcitation(nn.Module):
    """Squeeze-and-excitation over a token sequence: the mean over tokens goes through a bottleneck MLP
    (``channels -> channels // ratio -> channels``, ReLU then sigmoid) whose output rescales every channel.

    Used inside a Mamba mixer, after the gating ``y * silu(z)`` and before the output projection and residual, as
    in the squeeze-and-excitation variant of "Improving State Space Models for Computer Vision" (NYU, 2024).

    Args:
        channels (int): number of channels C.
        ratio (float): reduction ratio; the hidden width is ``max(1, round(channels / ratio))``. Default: 16.
        channels_last (bool): inputs are (batch, L, C) if True, (batch, C, L) if False. Default: False.
    """

    def __init__(self, channels: int, ratio: float = 16, channels_last: bool = False):
        super().__init__()
        if not isinstance(channels, int) or channels <= 0:
            raise ValueError(f'TokenSqueezeExcitation: channels must be a positive int, got {channels!r}.')
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not ratio >= 1:
            raise ValueError(f'TokenSqueezeExcitation: ratio must be a number >= 1, got {ratio!r}.')
        hidden = max(1, round(channels / ratio))
        self.channels_last = channels_last
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token_dim = 1 if self.channels_last else 2
        scale = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean(token_dim)))))
        return x * scale.unsqueeze(token_dim).to(x.dtype)
