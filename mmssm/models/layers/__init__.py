from .add_norm import add_norm, fused_add_norm_available
from .attention_pool import AttentionPool, AttentionPoolDownsample
from .inverted_residual import CausalInvertedResidual1d
from .mamba_mixer import MambaMixer
from .mamba_vision_mixer import MambaVisionMixer
from .norm import RMSNorm
from .norm2d import LayerNorm2d
from .pos_embed import resize_pos_embed
from .rope import VisionRoPE2d
from .s4d import S4DMixer
from .s5 import S5Mixer
from .se import TokenSqueezeExcitation
from .self_attention import MultiheadSelfAttention
from .window_attention import ConvRelPosAttention, NeighbourhoodAttention, ShiftedWindowAttention, WindowGeometry

__all__ = ['RMSNorm', 'MambaMixer', 'CausalInvertedResidual1d', 'TokenSqueezeExcitation', 'VisionRoPE2d',
           'resize_pos_embed', 'add_norm', 'fused_add_norm_available', 'MambaVisionMixer', 'LayerNorm2d',
           'MultiheadSelfAttention', 'AttentionPool',
           'AttentionPoolDownsample', 'S4DMixer', 'S5Mixer', 'ShiftedWindowAttention', 'NeighbourhoodAttention',
           'ConvRelPosAttention', 'WindowGeometry']
