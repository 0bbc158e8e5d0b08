"""The console commands ``mmfish-train``, ``mmfish-test``, ``mmfish-convert`` and ``mmfish-swap``.

Each runs its tool, ``tools/train.py``, ``tools/test.py``,
``tools/model_converters/fishnet2mmdet.py`` or ``tools/misc/swap_backbone.py``, with the same
arguments, found in the checkout or in the installed ``mmfish/.mim/tools``
(:mod:`mmfish.utils.mim`): ``mmfish-train CONFIG ...`` is ``python tools/train.py CONFIG ...``.
A config may be given as ``mmfish::NAME``
(``mmfish-train mmfish::mask_rcnn_fishnet150_fpn_1x_coco.py``).
"""

import os.path as osp
import sys
import types
from typing import Optional, Sequence

from .utils.mim import COMMANDS, tool_path


def run_tool(command: str, argv: Optional[Sequence[str]] = None) -> None:
    """Run the tool of a console command as ``python <tool> ARGS`` would (``__main__``, its
    folder first on ``sys.path``), with ``sys.argv[0]`` the command, so that its usage line and
    one-line errors name the command the user typed.

    Args:
        command: A key of :data:`mmfish.utils.mim.COMMANDS`, e.g. ``'mmfish-train'``.
        argv: The tool's arguments; ``sys.argv[1:]`` by default.
    """
    path = tool_path(COMMANDS[command])
    with open(path, encoding='utf-8') as f:
        code = compile(f.read(), path, 'exec')
    # What runpy.run_path does for a script, except that it sets sys.argv[0] to the file.
    main = types.ModuleType('__main__')
    main.__file__ = path
    sys.argv = [command, *(sys.argv[1:] if argv is None else argv)]
    sys.path.insert(0, osp.dirname(path))
    caller, sys.modules['__main__'] = sys.modules['__main__'], main
    try:
        exec(code, main.__dict__)
    finally:
        sys.modules['__main__'] = caller


def train() -> None:
    """``mmfish-train``: ``tools/train.py``."""
    run_tool('mmfish-train')


def test() -> None:
    """``mmfish-test``: ``tools/test.py``."""
    run_tool('mmfish-test')


def convert() -> None:
    """``mmfish-convert``: ``tools/model_converters/fishnet2mmdet.py``."""
    run_tool('mmfish-convert')


def swap() -> None:
    """``mmfish-swap``: ``tools/misc/swap_backbone.py``."""
    run_tool('mmfish-swap')
