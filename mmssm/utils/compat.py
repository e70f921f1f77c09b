"""Keep mmssm importable beside the versions of its neighbours that users really have installed."""
import importlib.abc
import importlib.metadata
import sys
import warnings

from packaging.version import Version

# mmpretrain 1.2.0 imports its BLIP/BLIP-2/... code whenever transformers >= 4.28 is installed, and that code
# fails at import under transformers 5 (names removed from transformers.modeling_utils). mmdet.models imports
# mmpretrain.models when mmpretrain is installed, and mmseg.models imports mmdet.models, so a user with a
# recent transformers could not build any mmssm config. mmssm needs none of those multimodal models: it turns
# mmpretrain's own switch for them off, and says so.
_DEPENDENCY_MODULE = 'mmpretrain.utils.dependency'
FIRST_BROKEN_TRANSFORMERS = Version('5.0.0')


def _installed_version(distribution: str):
    try:
        return Version(importlib.metadata.version(distribution))
    except importlib.metadata.PackageNotFoundError:
        return None


def mmpretrain_multimodal_is_broken() -> bool:
    """Whether this environment has the mmpretrain 1.2 + transformers >= 5 combination that fails at import."""
    mmpretrain_version = _installed_version('mmpretrain')
    transformers_version = _installed_version('transformers')
    return (mmpretrain_version is not None and transformers_version is not None
            and mmpretrain_version < Version('1.3.0') and transformers_version >= FIRST_BROKEN_TRANSFORMERS)


class _DisableMultimodalLoader(importlib.abc.Loader):
    """Runs mmpretrain's dependency module, then sets its ``WITH_MULTIMODAL`` switch to False."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        if getattr(module, 'WITH_MULTIMODAL', False):
            module.WITH_MULTIMODAL = False
            warnings.warn(
                f'transformers {_installed_version("transformers")} is installed, and mmpretrain '
                f'{_installed_version("mmpretrain")} cannot import its multimodal models (BLIP, ...) with '
                'transformers >= 5; mmssm turned them off so that the rest of mmpretrain, mmdet and mmseg '
                "import. To use them, run: pip install 'transformers<5'", stacklevel=2)


class _DisableMultimodalFinder(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path, target=None):
        if fullname != _DEPENDENCY_MODULE:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, 'find_spec'):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None:
            return None
        spec.loader = _DisableMultimodalLoader(spec.loader)
        return spec


def guard_mmpretrain_import() -> bool:
    """Make ``import mmpretrain.models`` work under transformers >= 5 (see the note above).

    Returns True when the guard was installed. Does nothing where the combination is fine. If mmpretrain's
    dependency module was imported already (before mmssm), it is too late to change the switch: the import of
    mmpretrain.models will fail, so say how to fix it.
    """
    if not mmpretrain_multimodal_is_broken():
        return False
    if _DEPENDENCY_MODULE in sys.modules:
        if getattr(sys.modules[_DEPENDENCY_MODULE], 'WITH_MULTIMODAL', False):
            warnings.warn(
                'mmpretrain was imported before mmssm with transformers >= 5 installed, so its multimodal '
                'models are switched on and mmpretrain.models will fail to import. Import mmssm first, or '
                "run: pip install 'transformers<5'", stacklevel=2)
        return False
    if not any(isinstance(finder, _DisableMultimodalFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DisableMultimodalFinder())
    return True
