from .weights_only_checkpoint import WeightsOnlyCheckpointHook, from_plain, to_plain

__all__ = ['WeightsOnlyCheckpointHook', 'to_plain', 'from_plain']
