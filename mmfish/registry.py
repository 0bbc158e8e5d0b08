"""mmfish registers its modules straight into the registries of the toolboxes that use them.

Every module is registered in MMDetection's registries. Models (the FishNet backbone) are also
registered in MMSegmentation's ``MODELS`` when ``mmseg`` is importable, so that
``backbone=dict(type='FishNet', ...)`` works in an mmseg config with
``custom_imports = dict(imports=['mmfish'])``; without mmseg installed, mmfish is an mmdet
plugin only (``SEG_MODELS`` is None). One class, registered in both: no copies.
"""

from typing import Optional, Type, TypeVar

from mmdet.registry import DATASETS, HOOKS, LOOPS, METRICS, MODELS, TRANSFORMS
from mmengine.registry import Registry

try:
    from mmseg.registry import MODELS as _SEG_MODELS
except ImportError:  # mmseg is optional: mmdet-only installs keep working
    _SEG_MODELS = None

SEG_MODELS: Optional[Registry] = _SEG_MODELS

_T = TypeVar('_T', bound=Type)


def register_model(cls: _T) -> _T:
    """Class decorator: registers a model in mmdet's ``MODELS`` and, if present, mmseg's."""
    MODELS.register_module(module=cls)
    if SEG_MODELS is not None:
        SEG_MODELS.register_module(module=cls)
    return cls


__all__ = [
    'DATASETS',
    'HOOKS',
    'LOOPS',
    'METRICS',
    'MODELS',
    'SEG_MODELS',
    'TRANSFORMS',
    'register_model',
]
