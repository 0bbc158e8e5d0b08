"""Command-line errors as one line with the fix, the traceback behind ``--debug``.

The tools' ``main`` functions raise :class:`CliError`, or another
:class:`~mmfish.utils.errors.UserInputError` (the project's data, conversion and checkpoint
errors, whose messages already name the file and the fix), for anything the user has to fix: a
missing file, a bad argument, a config that cannot do what was asked. :func:`run_cli` prints such
an error as ``<tool>: error: <message>`` on stderr and exits with status 2, the status argparse
gives a bad argument; ``--debug`` on the command line or ``MMFISH_DEBUG=1`` in the environment
lets the exception and its traceback through instead. A
:class:`~mmfish.utils.errors.TrainingStopped` (training ended on purpose, its checkpoints kept) is
reported the same way, as ``<tool>: stopped: <message>``, with exit status 1. Anything else (a
bug, an error inside mmdet) keeps its traceback.
"""

import argparse
import os
import os.path as osp
import sys
from typing import Callable, Optional, Tuple, Type

from mmengine.config import Config

from mmfish.utils.errors import TrainingStopped, UserInputError

DEBUG_ENV = 'MMFISH_DEBUG'
DEBUG_FLAG = '--debug'
EXIT_USAGE = 2
EXIT_STOPPED = 1  # a TrainingStopped: the run ended on purpose, its checkpoints kept


class CliError(UserInputError):
    """A problem with the command line or its inputs; the message names it and the fix."""


def user_errors() -> Tuple[Type[BaseException], ...]:
    """The exception types :func:`run_cli` reports as one line."""
    return (UserInputError, FileNotFoundError)


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--debug`` (read by :func:`run_cli`) to a tool's parser, so that ``--help`` lists it."""
    parser.add_argument(
        DEBUG_FLAG,
        action='store_true',
        help=f'show the full traceback of an error (or set {DEBUG_ENV}=1)',
    )


def debug_requested() -> bool:
    """Whether ``--debug`` is on the command line or ``MMFISH_DEBUG=1`` is set."""
    return DEBUG_FLAG in sys.argv[1:] or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def one_line(error: BaseException) -> str:
    """The error's message with its line breaks folded, for a one-line report.

    The type is named (``DataCheckError: ...``) unless it is a plain :class:`CliError`.
    """
    message = str(error) if not isinstance(error, FileNotFoundError) else _file_message(error)
    message = ' '.join(part.strip() for part in message.splitlines() if part.strip())
    return message if type(error) is CliError else f'{type(error).__name__}: {message}'


def debug_hint() -> str:
    """The end of a one-line error: how to see the traceback."""
    return f'(traceback: rerun with {DEBUG_FLAG} or {DEBUG_ENV}=1)'


def _file_message(error: FileNotFoundError) -> str:
    """``[Errno 2] No such file ...: 'x'`` made to say where relative paths were looked for."""
    if error.filename is None:
        return str(error)
    path = os.fsdecode(error.filename)
    where = '' if osp.isabs(path) else f' (relative to the current directory {os.getcwd()})'
    return f'{error.strerror or "no such file"}: {path}{where}'


def read_config(path: str, options: Optional[dict]) -> Config:
    """The config at ``path`` with ``--cfg-options`` merged; one that cannot be read (a syntax
    error, a base it cannot inherit from, a bad option) is a :class:`CliError`."""
    try:
        cfg = Config.fromfile(path)
        if options is not None:
            cfg.merge_from_dict(options)
    except user_errors():
        raise
    except Exception as error:
        raise CliError(
            f'the config {path} cannot be read: {type(error).__name__}: {error}'
        ) from error
    return cfg


def run_cli(main: Callable[[], None]) -> None:
    """Run a tool's ``main``; report a user error as one line on stderr and exit with status 2.

    The message starts with the script's file name, as argparse's errors do.
    """
    prog = osp.basename(sys.argv[0])
    if debug_requested():
        main()
        return
    try:
        main()
    except user_errors() as error:
        print(f'{prog}: error: {one_line(error)} {debug_hint()}', file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except TrainingStopped as error:
        print(f'{prog}: stopped: {one_line(error)} {debug_hint()}', file=sys.stderr)
        sys.exit(EXIT_STOPPED)
