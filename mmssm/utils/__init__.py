from .compat import guard_mmpretrain_import, mmpretrain_multimodal_is_broken

__all__ = ['guard_mmpretrain_import', 'mmpretrain_multimodal_is_broken']
