"""Let torch >= 2.6 load mmengine checkpoints with ``weights_only=True``.

torch 2.6 made ``torch.load`` default to ``weights_only=True``: it unpickles only tensors,
containers and allow-listed globals. mmengine 0.10.7 calls ``torch.load`` without the argument,
and its checkpoints hold a few non-tensor objects, so ``--resume`` fails with "Unsupported
global". What an mmengine checkpoint needs beyond torch's defaults (listed by
``torch.serialization.get_unsafe_globals_in_checkpoint`` on a checkpoint of ``tools/train.py``):

- ``mmengine.logging.HistoryBuffer``: the message hub's logged scalars (a plain data holder);
- numpy's ``ndarray``, ``dtype``, array and scalar reconstructors, for the arrays it holds;
- ``builtins.getattr``: ``HistoryBuffer`` pickles its statistics methods as
  ``getattr(HistoryBuffer, 'mean')``.

We keep ``weights_only=True`` and allow-list exactly these. ``getattr`` is not allowed as such:
the name ``builtins.getattr`` resolves to :func:`_history_buffer_getattr`, which only looks up
public methods of ``HistoryBuffer`` and refuses anything else. Any other global in a file is
still refused, so loading an untrusted checkpoint runs no arbitrary code.
"""

from typing import Any, List

import numpy as np
import torch


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to what mmengine checkpoints use it for."""
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and not name.startswith('_') and callable(getattr(obj, name, None)):
        return getattr(obj, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'mmfish refuses getattr({obj!r}, {name!r}) while loading a checkpoint: only '
        'public methods of mmengine HistoryBuffer are allowed'
    )


def _numpy_globals() -> List[Any]:
    """numpy's array and scalar reconstructors and the dtype classes of the arrays saved."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, bool)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def mmengine_safe_globals() -> List[Any]:
    """The globals, beyond torch's defaults, that mmengine checkpoints need to unpickle."""
    from mmengine.logging import HistoryBuffer

    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'), *_numpy_globals()]


def allow_mmengine_checkpoints() -> bool:
    """Allow-list mmengine's checkpoint globals for ``torch.load(weights_only=True)``.

    Returns:
        True when torch has an allow-list (torch >= 2.4) and it was extended; False for older
        torch, which loads without ``weights_only`` by default and needs nothing.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return False
    add_safe_globals(mmengine_safe_globals())
    return True
