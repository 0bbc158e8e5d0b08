"""Let torch >= 2.6 load mmengine checkpoints with ``weights_only=True``.

torch 2.6 made ``torch.load`` default to ``weights_only=True``: it unpickles only tensors,
containers and allow-listed classes. mmengine 0.10.7 calls ``torch.load`` without the argument,
and its checkpoints hold a few non-tensor objects (the message hub's ``HistoryBuffer``, which
stores numpy arrays), so ``--resume`` fails with "Unsupported global".

We do not turn ``weights_only`` off. We add to torch's allow-list exactly the classes an
mmengine/mmdet checkpoint contains, each a plain data holder: mmengine's ``HistoryBuffer`` and
the numpy array/scalar/dtype reconstructors it needs. Everything else in a checkpoint is still
refused, so loading an untrusted file runs no arbitrary code.
"""

from typing import Any, List

import numpy as np
import torch


def _numpy_globals() -> List[Any]:
    """numpy's array and scalar reconstructors and the dtype classes of the arrays saved."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, bool)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def mmengine_safe_globals() -> List[Any]:
    """The classes, beyond torch's defaults, that mmengine checkpoints need to unpickle."""
    from mmengine.logging import HistoryBuffer

    return [HistoryBuffer, *_numpy_globals()]


def allow_mmengine_checkpoints() -> bool:
    """Allow-list mmengine's checkpoint classes for ``torch.load(weights_only=True)``.

    Returns:
        True when torch has an allow-list (torch >= 2.4) and it was extended, else False (older
        torch loads without ``weights_only`` by default, and needs nothing).
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return False
    add_safe_globals(mmengine_safe_globals())
    return True
