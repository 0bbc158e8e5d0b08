"""mmfish: the FishNet backbone for MMDetection 3.x.

Importing mmfish registers its modules in MMDetection's registries (configs load it with
``custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)``) and lets torch >= 2.6
load mmengine checkpoints safely (see :mod:`mmfish.engine.runner.checkpoint_compat`).
"""

from .engine.runner.checkpoint_compat import allow_mmengine_checkpoints
from .version import __version__

allow_mmengine_checkpoints()

from . import engine, models  # noqa: E402  (register FishNet, the hooks, loops, optim wrappers)

__all__ = ['__version__', 'engine', 'models']
