from .mamba_vision import MambaVision
from .vim import Vim

__all__ = ['Vim', 'MambaVision']
