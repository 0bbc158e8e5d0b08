"""mmfish: the FishNet backbone for MMDetection 3.x (and MMSegmentation 1.x).

Importing mmfish registers its modules in MMDetection's registries, and FishNet in
MMSegmentation's too when mmseg is installed (configs load it with
``custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)``) and lets torch >= 2.6
load mmengine checkpoints safely (see :mod:`mmfish.engine.runner.checkpoint_compat`).
"""

from .engine.runner.checkpoint_compat import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from . import (  # noqa: E402  (FishNet in mmdet's and mmseg's MODELS; hooks, loops, optim wrappers)
    engine,
    models,
)

__all__ = ['__version__', 'engine', 'models']
