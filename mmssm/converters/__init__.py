"""Converters from the checkpoints of the original projects to mmssm's layout (one module per family)."""
from .mambavision import (
    MambaVisionConversion,
    convert_mambavision_checkpoint,
    infer_mambavision_arch,
    mambavision_config_snippet,
    mambavision_conversion,
    verify_mambavision_conversion,
)
from .plainmamba import convert_plainmamba_checkpoint, infer_plainmamba_arch
from .vim import (
    VimConversion,
    compare_rope_tables,
    convert_vim_checkpoint,
    infer_vim_arch,
    vim_config_snippet,
    vim_conversion,
)

__all__ = [
    'MambaVisionConversion', 'convert_mambavision_checkpoint', 'infer_mambavision_arch', 'mambavision_config_snippet',
    'mambavision_conversion', 'verify_mambavision_conversion', 'convert_plainmamba_checkpoint',
    'infer_plainmamba_arch', 'VimConversion', 'compare_rope_tables',
    'convert_vim_checkpoint', 'infer_vim_arch', 'vim_config_snippet', 'vim_conversion'
]
