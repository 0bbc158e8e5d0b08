"""The tiny FishNet of the tests: one block per stage and transfer, narrow channels.

Written once, in ``tests/data/tiny_fishnet.py``: the tiny test configs take it from there as a
config base (``_base_.tiny_arch``), and :func:`tiny_arch` reads it for tests that build a
:class:`~mmfish.models.FishNet` directly. Its features 0-10 have 16, 16, 32, 64, 64, 96, 64, 48,
112, 208 and 272 channels.
"""

import os.path as osp
from typing import Any, Dict

from mmengine.config import Config

from .paths import TEST_DATA

TINY_FISHNET = osp.join(TEST_DATA, 'tiny_fishnet.py')


def tiny_arch(**changes: Any) -> Dict[str, Any]:
    """A new dict of the tiny arch (``FishNet(arch=...)``), with ``changes`` applied.

    Example:
        >>> FishNet(tiny_arch(groups=4, group_width=2))  # a tiny FishNeXt
    """
    arch = Config.fromfile(TINY_FISHNET).tiny_arch.to_dict()
    arch.pop('_delete_', None)  # for the configs: replaces the demo's arch='fishnet99'
    return {**arch, **changes}
