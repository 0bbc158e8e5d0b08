"""mmfish's registry policy: one class, registered wherever a config may name it.

Each mmfish class is registered, under one name, in two places:

1. **The registry of its kind in every toolbox mmfish serves** (:data:`TOOLBOXES`): MMDetection's
   always, MMSegmentation's and MMPretrain's when they are importable. So an mmdet config
   (``default_scope='mmdet'``) and an mmseg config (``default_scope='mmseg'``) both name it
   plainly, e.g. ``backbone=dict(type='FishNet', ...)``,
   ``default_hooks=dict(checkpoint=dict(type='FaultTolerantCheckpointHook'))``,
   ``train_cfg=dict(type='ResumableIterBasedTrainLoop', ...)``, once the config has
   ``custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)``.
2. **mmfish's own registries**, scope ``'mmfish'``, defined below as children of MMDetection's
   (as mmdet's are children of mmengine's). A config dict whose ``_scope_`` is ``'mmfish'``, or
   any dict of a config whose ``default_scope`` is ``'mmfish'``, builds from them: mmfish's
   classes, and through the parent every mmdet and mmengine class, but no mmseg class. (A base
   named ``mmfish::...`` gives its dicts no scope: :data:`mmfish.utils.mim.BASE_SCOPE`.)

Norm layers (``CPUSyncBN``) are registered in mmengine's root ``MODELS`` too, beside mmcv's own
norms: mmcv's ``build_norm_layer`` looks there when no scope is set.

The decorators ``register_model``, ``register_norm_layer``, ``register_hook``, ``register_loop``,
``register_optim_wrapper`` and ``register_transform`` (:class:`Registrar`) apply this policy;
mmfish's modules use nothing else. To serve another toolbox whose registries have the same
names, add its package name to :data:`TOOLBOXES`.
"""

import importlib
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

import mmdet.registry as mmdet_registry
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

SCOPE = 'mmfish'
# The toolboxes whose registries receive mmfish's classes: mmdet (required: its registries are
# the parents of mmfish's), then the optional ones, served when importable.
TOOLBOXES: Tuple[str, ...] = ('mmdet', 'mmseg', 'mmpretrain')


def _child(parent: Registry) -> Registry:
    return Registry(parent.name, parent=parent, scope=SCOPE)


# mmfish's registries: one per registry of mmdet's, so that every kind of ``_scope_='mmfish'``
# dict finds mmdet's and mmengine's classes through its parent.
RUNNERS = _child(mmdet_registry.RUNNERS)
RUNNER_CONSTRUCTORS = _child(mmdet_registry.RUNNER_CONSTRUCTORS)
LOOPS = _child(mmdet_registry.LOOPS)
HOOKS = _child(mmdet_registry.HOOKS)
DATASETS = _child(mmdet_registry.DATASETS)
DATA_SAMPLERS = _child(mmdet_registry.DATA_SAMPLERS)
TRANSFORMS = _child(mmdet_registry.TRANSFORMS)
MODELS = _child(mmdet_registry.MODELS)
MODEL_WRAPPERS = _child(mmdet_registry.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(mmdet_registry.WEIGHT_INITIALIZERS)
OPTIMIZERS = _child(mmdet_registry.OPTIMIZERS)
OPTIM_WRAPPERS = _child(mmdet_registry.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(mmdet_registry.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child(mmdet_registry.PARAM_SCHEDULERS)
METRICS = _child(mmdet_registry.METRICS)
EVALUATOR = _child(mmdet_registry.EVALUATOR)
TASK_UTILS = _child(mmdet_registry.TASK_UTILS)
VISUALIZERS = _child(mmdet_registry.VISUALIZERS)
VISBACKENDS = _child(mmdet_registry.VISBACKENDS)
LOG_PROCESSORS = _child(mmdet_registry.LOG_PROCESSORS)
# mmfish's registries by kind (the names of mmdet's and mmseg's registries)
REGISTRIES: Dict[str, Registry] = {
    'RUNNERS': RUNNERS,
    'RUNNER_CONSTRUCTORS': RUNNER_CONSTRUCTORS,
    'LOOPS': LOOPS,
    'HOOKS': HOOKS,
    'DATASETS': DATASETS,
    'DATA_SAMPLERS': DATA_SAMPLERS,
    'TRANSFORMS': TRANSFORMS,
    'MODELS': MODELS,
    'MODEL_WRAPPERS': MODEL_WRAPPERS,
    'WEIGHT_INITIALIZERS': WEIGHT_INITIALIZERS,
    'OPTIMIZERS': OPTIMIZERS,
    'OPTIM_WRAPPERS': OPTIM_WRAPPERS,
    'OPTIM_WRAPPER_CONSTRUCTORS': OPTIM_WRAPPER_CONSTRUCTORS,
    'PARAM_SCHEDULERS': PARAM_SCHEDULERS,
    'METRICS': METRICS,
    'EVALUATOR': EVALUATOR,
    'TASK_UTILS': TASK_UTILS,
    'VISUALIZERS': VISUALIZERS,
    'VISBACKENDS': VISBACKENDS,
    'LOG_PROCESSORS': LOG_PROCESSORS,
}


def served_toolboxes() -> List[str]:
    """The names in :data:`TOOLBOXES` whose ``<name>.registry`` imports here, in that order."""
    served = []
    for name in TOOLBOXES:
        try:
            importlib.import_module(f'{name}.registry')
        except ImportError:
            if name == 'mmdet':
                raise
            continue
        served.append(name)
    return served


_T = TypeVar('_T', bound=Type)


class Registrar:
    """A class decorator that registers classes of one kind by mmfish's policy.

    ``@register_hook`` registers the class under its own name, ``@register_hook(name='X')``
    under ``'X'``, in every registry of :meth:`registries`.

    Args:
        kind: The registries' name in mmdet and mmseg: ``'MODELS'``, ``'HOOKS'``...
        *extra: Registries that receive the class too (mmengine's root ``MODELS`` for norms).
    """

    def __init__(self, kind: str, *extra: Registry) -> None:
        if kind not in REGISTRIES:
            raise KeyError(f'{kind!r} is not a registry of mmdet; one of {sorted(REGISTRIES)}')
        self.kind = kind
        self.extra = extra

    def registries(self) -> List[Registry]:
        """mmfish's registry of this kind, each served toolbox's (if it has one), the extra."""
        found = [REGISTRIES[self.kind]]
        for name in served_toolboxes():
            registry = getattr(importlib.import_module(f'{name}.registry'), self.kind, None)
            if isinstance(registry, Registry):
                found.append(registry)
        return found + list(self.extra)

    def __call__(self, cls: Optional[_T] = None, *, name: Optional[str] = None) -> Any:
        def register(target: _T) -> _T:
            for registry in self.registries():
                registry.register_module(name=name, module=target)
            return target

        return register if cls is None else register(cls)


register_model = Registrar('MODELS')
register_norm_layer = Registrar('MODELS', MMENGINE_MODELS)
register_hook = Registrar('HOOKS')
register_loop = Registrar('LOOPS')
register_optim_wrapper = Registrar('OPTIM_WRAPPERS')
register_transform = Registrar('TRANSFORMS')

__all__ = [
    'DATASETS',
    'DATA_SAMPLERS',
    'EVALUATOR',
    'HOOKS',
    'LOG_PROCESSORS',
    'LOOPS',
    'METRICS',
    'MODELS',
    'MODEL_WRAPPERS',
    'OPTIMIZERS',
    'OPTIM_WRAPPERS',
    'OPTIM_WRAPPER_CONSTRUCTORS',
    'PARAM_SCHEDULERS',
    'REGISTRIES',
    'RUNNERS',
    'RUNNER_CONSTRUCTORS',
    'Registrar',
    'SCOPE',
    'TASK_UTILS',
    'TOOLBOXES',
    'TRANSFORMS',
    'VISBACKENDS',
    'VISUALIZERS',
    'WEIGHT_INITIALIZERS',
    'register_hook',
    'register_loop',
    'register_model',
    'register_norm_layer',
    'register_optim_wrapper',
    'register_transform',
    'served_toolboxes',
]
