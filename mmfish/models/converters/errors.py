"""The errors of the converter: each names the keys at fault (``keys``, possibly empty)."""

from typing import Iterable, List

from mmfish.utils.errors import UserInputError


class FishNetConversionError(UserInputError):
    """A checkpoint cannot be converted; ``keys`` names the keys at fault (may be empty)."""

    def __init__(self, message: str, keys: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.keys: List[str] = list(keys)


class CheckpointReadError(FishNetConversionError):
    """The file cannot be read: truncated, corrupt, or holding more than tensors."""


class NotFishNetCheckpointError(FishNetConversionError):
    """The file is readable but is not a FishNet checkpoint (foreign)."""


class UnplacedKeyError(FishNetConversionError):
    """Some keys have no counterpart in mmfish's FishNet."""


class MissingKeyError(FishNetConversionError):
    """The checkpoint lacks keys that the detected (or requested) variant has."""


class ArchMismatchError(FishNetConversionError):
    """The requested ``arch`` is not the variant the checkpoint holds."""


class ShapeMismatchError(FishNetConversionError):
    """Some tensors do not have the shape of their mmfish counterpart."""


__all__ = [
    'ArchMismatchError',
    'CheckpointReadError',
    'FishNetConversionError',
    'MissingKeyError',
    'NotFishNetCheckpointError',
    'ShapeMismatchError',
    'UnplacedKeyError',
]
