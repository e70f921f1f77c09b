from .mamba_vision import MambaVision
from .plain_mamba import PlainMamba
from .vim import Vim

__all__ = ['Vim', 'MambaVision', 'PlainMamba']
