"""Checkpoints that ``torch.load(weights_only=True)`` can read, so that ``--resume`` works under torch >= 2.6.

MMEngine 0.10.7 saves its message hub as ``HistoryBuffer`` objects (whose pickles also reference numpy arrays and
``builtins.getattr``) and may save numpy values in ``meta`` and the hub's runtime info. torch >= 2.6 loads with
``weights_only=True`` by default and refuses all of these, so resuming fails. Allow-listing them would mean
allowing ``getattr``, i.e. arbitrary code. This hook instead turns them into plain containers, tensors and Python
numbers before a checkpoint is written, and turns them back after one is read (before the runner hands the
message hub its state), so checkpoints stay loadable with ``weights_only=True`` and the run resumes exactly.
"""
import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer

from mmssm.registry import HOOKS

_BUFFER_TAG = '__mmssm_history_buffer__'
_ARRAY_TAG = '__mmssm_ndarray__'


def to_plain(value):
    """Recursively replace HistoryBuffers, numpy arrays and numpy scalars by weights-only-loadable data."""
    if isinstance(value, HistoryBuffer):
        logs, counts = value.data
        return {_BUFFER_TAG: True, 'log': to_plain(np.asarray(logs)), 'count': to_plain(np.asarray(counts)),
                'max_length': int(value.max_length)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in 'biuf':
            data = torch.from_numpy(np.ascontiguousarray(value).copy())
        else:  # strings, objects, ...: nested lists of plain values
            data = to_plain(value.tolist())
        return {_ARRAY_TAG: True, 'data': data, 'dtype': str(value.dtype), 'shape': list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return type(value)((k, to_plain(v)) for k, v in value.items()) if type(value) is not dict \
            else {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        converted = [to_plain(v) for v in value]
        return converted if isinstance(value, list) else tuple(converted)
    return value


def from_plain(value):
    """Inverse of :func:`to_plain`."""
    if isinstance(value, dict):
        if value.get(_BUFFER_TAG) is True:
            return HistoryBuffer(from_plain(value['log']), from_plain(value['count']), value['max_length'])
        if value.get(_ARRAY_TAG) is True:
            data = value['data']
            data = data.numpy() if isinstance(data, torch.Tensor) else from_plain(data)
            return np.asarray(data, dtype=None if value['dtype'] == 'object' else value['dtype']).reshape(
                value['shape'])
        restored = {k: from_plain(v) for k, v in value.items()}
        return type(value)(restored) if type(value) is not dict else restored
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_plain(v) for v in value)
    return value


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Keep checkpoints loadable with ``torch.load(..., weights_only=True)`` (see the module docstring).

    ``tools/train.py`` adds it to every run; other entry points add ``dict(type='mmssm.WeightsOnlyCheckpointHook')``
    to ``custom_hooks``. Checkpoints written by plain MMEngine are not changed; load them with
    ``tools/misc/to_weights_only.py`` (which needs to trust the file once).
    """

    priority = 'VERY_LOW'  # run after every hook that adds to the checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ('message_hub', 'meta'):
            if key in checkpoint:
                checkpoint[key] = to_plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ('message_hub', 'meta'):
            if key in checkpoint:
                checkpoint[key] = from_plain(checkpoint[key])
