from .compat import guard_mmpretrain_import, mmpretrain_multimodal_is_broken
from .vim_converter import (
    VimConversion,
    compare_rope_tables,
    convert_vim_checkpoint,
    infer_vim_arch,
    vim_config_snippet,
    vim_conversion,
)

__all__ = [
    'guard_mmpretrain_import', 'mmpretrain_multimodal_is_broken', 'VimConversion', 'compare_rope_tables',
    'convert_vim_checkpoint', 'infer_vim_arch', 'vim_config_snippet', 'vim_conversion'
]
