"""The base of every error that a user fixes by changing an input, and how their messages list.

:class:`UserInputError` is a ``ValueError``. Its subclasses live beside the code that raises
them (``DataCheckError`` in :mod:`mmfish.datasets.data_checks`, ``FishNetConversionError`` in
:mod:`mmfish.models.converters`, ``PretrainedMismatchError`` in
:mod:`mmfish.models.backbones.fishnet_pretrained`, ``CliError`` in :mod:`mmfish.utils.cli`);
their messages name what was wrong and the fix. :func:`mmfish.utils.cli.run_cli` reports any of
them as one line, without importing the modules that define them. :func:`listing` is how
their messages show the keys or files at fault: how many, and the first few.
"""

from typing import Iterable


class UserInputError(ValueError):
    """A problem with the user's input; the message names it and the fix."""


class TrainingStopped(Exception):
    """Training stopped on purpose, its work kept on disk; the message says why and what next.

    Raised by the training hooks (too many non-finite steps, a checkpoint that could not be
    written); :func:`mmfish.utils.cli.run_cli` reports it as one line and exits with status 1.
    """


def listing(items: Iterable[object], limit: int, noun: str = '') -> str:
    """How many ``items`` there are and the first ``limit`` of them, for an error message.

    ``listing(['a', 'b', 'c'], 2)`` is ``'3 (a, b, and 1 more)'``; with ``noun='key'``,
    ``'3 keys (a, b, and 1 more)'``.

    Args:
        items: The items (keys, file names), in the order to show them.
        limit: How many to show.
        noun: What they are, named after the count (made plural when the count is not 1).
    """
    items = [str(item) for item in items]
    shown = ', '.join(items[:limit])
    more = f', and {len(items) - limit} more' if len(items) > limit else ''
    what = f' {noun}{"" if len(items) == 1 else "s"}' if noun else ''
    return f'{len(items)}{what} ({shown}{more})'


__all__ = ['TrainingStopped', 'UserInputError', 'listing']
