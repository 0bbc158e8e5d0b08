"""The base of every error that a user fixes by changing an input: a file, an argument, a config.

:class:`UserInputError` is a ``ValueError``. Its subclasses live beside the code that raises
them (``DataCheckError`` in :mod:`mmfish.datasets.data_checks`, ``FishNetConversionError`` in
:mod:`mmfish.models.converters`, ``PretrainedMismatchError`` in
:mod:`mmfish.models.backbones.fishnet_pretrained`, ``CliError`` in :mod:`mmfish.utils.cli`);
their messages name what was wrong and the fix. :func:`mmfish.utils.cli.run_cli` reports any of
them as one line, without importing the modules that define them.
"""


class UserInputError(ValueError):
    """A problem with the user's input; the message names it and the fix."""


__all__ = ['UserInputError']
