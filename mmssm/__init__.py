"""mmssm: state-space-model vision backbones for OpenMMLab."""
from .utils.compat import guard_mmpretrain_import
from .version import __version__, version_info

# Before anything imports mmpretrain (mmdet.models and mmseg.models do), so that a recent transformers does not
# break it.
guard_mmpretrain_import()

__all__ = ['__version__', 'version_info']
