"""mmfish: the FishNet backbone for MMDetection 3.x (and MMSegmentation 1.x).

Importing mmfish registers its modules in mmfish's, MMDetection's and, when they are installed,
MMSegmentation's and MMPretrain's registries, and FishNet's timm models (:mod:`mmfish.registry`;
configs load it with ``custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)``)
and lets torch >= 2.6 load mmengine checkpoints safely (see
:mod:`mmfish.engine.runner.checkpoint_compat`), and teaches mmengine's ``Config`` the ``mmfish::``
prefix, so that a config's ``_base_`` may name
``mmfish::mask_rcnn_fishnet150_fpn_1x_coco.py`` (see :mod:`mmfish.utils.mim`).
"""

import warnings

# mmengine 0.10.7 imports and then reloads setuptools' pkg_resources whenever it resolves an
# ``mmdet::`` / ``mmseg::`` config base (``mmengine.utils.package_utils``), and setuptools >= 81
# warns on every import of it: twice per tool run, about code that is not ours. Silenced for
# those two imports only (the message, raised from mmengine's module or from its
# ``importlib.reload``); any other use of pkg_resources still warns.
warnings.filterwarnings(
    'ignore',
    message='pkg_resources is deprecated as an API',
    category=UserWarning,
    module=r'(mmengine\.utils\.package_utils|importlib)$',
)

from .engine.runner.checkpoint_compat import allow_mmengine_checkpoints  # noqa: E402
from .utils.mim import register_config_scope  # noqa: E402
from .version import __version__  # noqa: E402

allow_mmengine_checkpoints()
register_config_scope()

from . import (  # noqa: E402  (FishNet in mmdet's and mmseg's MODELS; hooks, loops, optim wrappers)
    engine,
    models,
)
from .datasets import lighting  # noqa: E402,F401  (FishNetLighting in the toolboxes' TRANSFORMS)

__all__ = ['__version__', 'engine', 'models']
