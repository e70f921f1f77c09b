from .cuda_graph_train import CUDAGraphTrainHook
from .pruning import CosinePruningHook, EarlyBirdHook, GradientSaliencyHook, IMPRewindHook, PruningMasks
from .weights_only_checkpoint import WeightsOnlyCheckpointHook, from_plain, to_plain

__all__ = ['CUDAGraphTrainHook', 'WeightsOnlyCheckpointHook', 'to_plain', 'from_plain', 'CosinePruningHook',
           'IMPRewindHook', 'EarlyBirdHook', 'GradientSaliencyHook', 'PruningMasks']
