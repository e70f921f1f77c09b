from .base import GRANULARITIES, BasePruningHook, cosine_sparsity
from .channel_masks import ChannelMasks, rank_units, select_groups
from .cosine import CosinePruningHook
from .early_bird import EarlyBirdHook, mask_distance
from .imp import IMPRewindHook
from .masks import DEFAULT_EXCLUDE, PruningMasks, select_prunable
from .saliency import GradientSaliencyHook, saliency_scores

__all__ = ['BasePruningHook', 'CosinePruningHook', 'IMPRewindHook', 'EarlyBirdHook', 'GradientSaliencyHook',
           'PruningMasks', 'ChannelMasks', 'select_prunable', 'select_groups', 'rank_units', 'DEFAULT_EXCLUDE',
           'GRANULARITIES', 'cosine_sparsity', 'mask_distance', 'saliency_scores']
