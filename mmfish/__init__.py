"""mmfish: the FishNet backbone for MMDetection 3.x (and MMSegmentation 1.x).

Importing mmfish registers its modules in MMDetection's registries, and FishNet in
MMSegmentation's too when mmseg is installed (configs load it with
``custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)``) and lets torch >= 2.6
load mmengine checkpoints safely (see :mod:`mmfish.utils.checkpoint_compat`).
"""

from .utils.checkpoint_compat import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from . import models  # noqa: E402  (registers FishNet in mmdet's MODELS, and mmseg's)
from .utils import amp  # noqa: E402, F401  (registers CPUAmpOptimWrapper)

__all__ = ['__version__', 'models']
