"""Converters from the checkpoints of the original projects to mmssm's layout (one module per family)."""
from .mambavision import (
    MambaVisionConversion,
    convert_mambavision_checkpoint,
    infer_mambavision_arch,
    mambavision_config_snippet,
    mambavision_conversion,
    verify_mambavision_conversion,
)

__all__ = [
    'MambaVisionConversion', 'convert_mambavision_checkpoint', 'infer_mambavision_arch', 'mambavision_config_snippet',
    'mambavision_conversion', 'verify_mambavision_conversion'
]
