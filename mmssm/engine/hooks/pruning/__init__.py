from .base import BasePruningHook, cosine_sparsity
from .cosine import CosinePruningHook
from .early_bird import EarlyBirdHook, mask_distance
from .imp import IMPRewindHook
from .masks import DEFAULT_EXCLUDE, PruningMasks, select_prunable
from .saliency import GradientSaliencyHook, saliency_scores

__all__ = ['BasePruningHook', 'CosinePruningHook', 'IMPRewindHook', 'EarlyBirdHook', 'GradientSaliencyHook',
           'PruningMasks', 'select_prunable', 'DEFAULT_EXCLUDE', 'cosine_sparsity', 'mask_distance',
           'saliency_scores']
