"""Test helper, imported into a training run by ``custom_imports``: slow checkpoint writes.

The chaos test (tests/test_engine/test_fault_tolerant_training.py) kills training inside a
checkpoint write. On the tiny config a write takes milliseconds; with this module imported,
mmengine's local file writes of FaultTolerantCheckpointHook's temporary checkpoint files write
half of the file, pause ``MMFISH_SLOW_WRITE_S`` seconds (default 2), then write the rest.
"""

import os
import os.path as osp
import time

from mmengine.fileio.backends import LocalBackend

from mmfish.engine.hooks.checkpoint_hook import TMP_MARK

_put = LocalBackend.put


def _slow_put(self: LocalBackend, obj: bytes, filepath: str) -> None:
    if not osp.basename(str(filepath)).startswith(TMP_MARK):
        return _put(self, obj, filepath)
    half = len(obj) // 2
    with open(filepath, 'wb') as f:
        f.write(obj[:half])
        f.flush()
        time.sleep(float(os.environ.get('MMFISH_SLOW_WRITE_S', '2')))
        f.write(obj[half:])


LocalBackend.put = _slow_put
