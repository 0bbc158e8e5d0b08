"""FishNet at the image level: the reference's score head as an MMPretrain head, and FishNet as
timm models.

Each part is registered when its toolbox imports (both are in the pinned stack; an environment
without one, e.g. the offline GPU route, still gets FishNet for mmdet and mmseg).
"""

import importlib.util

__all__ = []

if importlib.util.find_spec('mmpretrain') is not None:
    from .cls_head import FishNetClsHead  # noqa: F401

    __all__ += ['FishNetClsHead']

if importlib.util.find_spec('timm') is not None:
    from .timm_models import TimmFishNet  # noqa: F401

    __all__ += ['TimmFishNet']
