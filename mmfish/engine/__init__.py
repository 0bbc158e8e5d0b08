"""Engine-level pieces, laid out as mmdet's ``mmdet/engine``: hooks, optimizer wrappers, runner.

Importing it registers them by mmfish's registry policy (:mod:`mmfish.registry`): in mmfish's,
mmdet's and, when installed, mmseg's registries.
"""

from .hooks import *  # noqa: F401, F403
from .optimizers import *  # noqa: F401, F403
from .runner import *  # noqa: F401, F403
