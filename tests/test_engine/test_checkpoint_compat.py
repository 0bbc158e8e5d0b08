"""torch >= 2.6 loads mmengine checkpoints with weights_only=True once mmfish is imported."""

import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import mmfish  # noqa: F401


class _Evil:
    def __reduce__(self):
        import os

        return os.system, ('echo pwned',)


def test_message_hub_state_loads_with_weights_only(tmp_path):
    hub = MessageHub.get_instance('mmfish-test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', 0.5)
    hub.update_info('iter', 7)
    path = tmp_path / 'ckpt.pth'
    torch.save({'message_hub': hub.state_dict(), 'state_dict': {'w': torch.ones(2)}}, path)
    loaded = torch.load(path)  # torch's default: weights_only=True
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.mean() == pytest.approx(1.0) and buffer.statistics('current') == 0.5
    assert np.array_equal(buffer.data[0], np.array([1.5, 0.5]))


def test_arbitrary_code_is_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'payload': _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_getattr_is_allowed_only_for_history_buffer_methods(tmp_path):
    class _Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = tmp_path / 'sneaky.pth'
    torch.save({'payload': _Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refuses getattr'):
        torch.load(path)
