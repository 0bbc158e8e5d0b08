"""Test helper, imported into a training run by ``custom_imports``: faults on purpose.

Set by environment variables of the training process (iterations counted from 1):

- ``MMFISH_NAN_LOSS_ITERS=3,4``: at these iterations the detector's ``loss_bbox`` is NaN.
- ``MMFISH_NAN_GRAD_ITERS=5``: at these iterations ``loss_cls`` keeps its value and sends a NaN
  gradient back.
- ``MMFISH_FAULT_RANK=1``: only the process of this rank injects the faults above (default: all).
- ``MMFISH_SLOW_ITER_S=2``: every iteration takes 2 s longer (a window to send signals in).
- ``MMFISH_FULL_DISK_AFTER=N``: after N checkpoint files written in full, every write of a
  checkpoint's temporary file writes half of it and fails with ``OSError(ENOSPC)``, as a full
  disk does.

Used by ``tests/test_engine/test_non_finite_steps.py``, ``test_checkpoint_writes.py``,
``test_stop_signals.py`` and ``test_soak_training.py``.
"""

import errno
import os
import os.path as osp
import time

import torch
from mmdet.models.detectors.two_stage import TwoStageDetector
from mmengine.fileio.backends import LocalBackend
from mmengine.logging import MessageHub

from mmfish.utils.io import TMP_MARK


def _iters(name: str) -> set:
    return {int(i) for i in os.environ.get(name, '').split(',') if i.strip()}


class _NanGrad(torch.autograd.Function):
    """The identity, whose gradient is NaN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float('nan'))


_loss = TwoStageDetector.loss


def _faulty_loss(self, *args, **kwargs):
    losses = _loss(self, *args, **kwargs)
    rank = os.environ.get('MMFISH_FAULT_RANK')
    if rank is not None and rank != os.environ.get('RANK', '0'):
        return losses
    step = MessageHub.get_current_instance().get_info('iter', 0) + 1
    time.sleep(float(os.environ.get('MMFISH_SLOW_ITER_S', '0')))
    if step in _iters('MMFISH_NAN_LOSS_ITERS'):
        losses['loss_bbox'] = losses['loss_bbox'] * float('nan')
    if step in _iters('MMFISH_NAN_GRAD_ITERS'):
        losses['loss_cls'] = _NanGrad.apply(losses['loss_cls'])
    return losses


TwoStageDetector.loss = _faulty_loss

_put = LocalBackend.put
_written = [0]


def _full_disk_put(self: LocalBackend, obj: bytes, filepath: str) -> None:
    limit = os.environ.get('MMFISH_FULL_DISK_AFTER')
    if limit is None or not osp.basename(str(filepath)).startswith(TMP_MARK):
        return _put(self, obj, filepath)
    if _written[0] < int(limit):
        _written[0] += 1
        return _put(self, obj, filepath)
    with open(filepath, 'wb') as f:
        f.write(obj[: len(obj) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))


LocalBackend.put = _full_disk_put
