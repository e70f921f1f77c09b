import io

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mmssm.engine.hooks import WeightsOnlyCheckpointHook, from_plain, to_plain


def checkpoint_like_mmengine():
    hub = MessageHub.get_instance('mmssm-test-hub')
    for i in range(5):
        hub.update_scalar('train/loss', 1.0 / (i + 1))
        hub.update_scalar('train/iter_count', i)
    hub.update_info('iter', np.int64(3))
    meta = dict(seed=np.int64(5), epoch=2, dataset_meta=dict(classes=('a', 'b'), palette=np.array([[1, 2, 3]])),
                names=np.array(['x', 'yz']))
    return dict(meta=meta, message_hub=hub.state_dict(), state_dict=dict(w=torch.ones(2)))


def roundtrip(checkpoint):
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_plain_mmengine_checkpoints_do_not_load_weights_only():
    """The problem this hook exists for (if torch ever allows these, the hook can go)."""
    with pytest.raises(Exception, match='Weights only load failed'):
        roundtrip(checkpoint_like_mmengine())


def test_hook_makes_checkpoints_weights_only_and_restores_them():
    checkpoint = checkpoint_like_mmengine()
    original_hub = checkpoint['message_hub']
    hook = WeightsOnlyCheckpointHook()
    hook.before_save_checkpoint(None, checkpoint)
    loaded = roundtrip(checkpoint)
    hook.after_load_checkpoint(None, loaded)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    for key, value in original_hub['log_scalars'].items():
        restored = loaded['message_hub']['log_scalars'][key]
        for a, b in zip(restored.data, value.data):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        assert restored.max_length == value.max_length
    assert loaded['message_hub']['runtime_info']['iter'] == 3
    assert loaded['meta']['seed'] == 5 and loaded['meta']['dataset_meta']['classes'] == ('a', 'b')
    np.testing.assert_array_equal(loaded['meta']['dataset_meta']['palette'], np.array([[1, 2, 3]]))
    np.testing.assert_array_equal(loaded['meta']['names'], np.array(['x', 'yz']))
    hub = MessageHub.get_instance('mmssm-test-hub-2')
    hub.load_state_dict(loaded['message_hub'])  # the runner's next step
    assert hub.get_scalar('train/loss').current() == pytest.approx(0.2)


def test_plain_values_pass_through():
    value = dict(a=[1, 2.5, 'x', None, (True,)], t=torch.zeros(2))
    assert from_plain(to_plain(value))['a'] == value['a']
