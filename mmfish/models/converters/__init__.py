"""Conversion of FishNet ImageNet weights to mmfish's names.

Imported one way: :mod:`.keys` (the key grammar of the authors' checkpoints and its map onto
mmfish's names) <- :mod:`.layouts` (the other published layouts, renamed into the authors') <-
:mod:`.convert` (the conversion and the converter's file I/O); :mod:`.errors` below all three.
``tools/model_converters/fishnet2mmdet.py`` is the command line. The state-dict conversion is
:func:`mmfish.models.converters.convert.convert` (not exported here, where ``convert`` is
its module).
"""

from mmfish.models.backbones.variants import REFERENCE_ARCHS

from .convert import (
    DEFAULT_OUT_INDICES,
    convert_checkpoint,
    detect_arch,
    load_reference_checkpoint,
    to_classifier,
)
from .errors import (
    ArchMismatchError,
    CheckpointReadError,
    FishNetConversionError,
    MissingKeyError,
    NotFishNetCheckpointError,
    ShapeMismatchError,
    UnplacedKeyError,
)
from .keys import expected_shapes, map_key, reference_names, strip_module_prefix
from .layouts import (
    LAYOUT_NAMES,
    LAYOUTS,
    WELLTRAINED_RENAMES,
    describe_layout,
    detect_layout,
    layout_key,
    layout_table,
    to_reference_layout,
)

__all__ = [
    'DEFAULT_OUT_INDICES',
    'LAYOUTS',
    'LAYOUT_NAMES',
    'REFERENCE_ARCHS',
    'WELLTRAINED_RENAMES',
    'ArchMismatchError',
    'CheckpointReadError',
    'FishNetConversionError',
    'MissingKeyError',
    'NotFishNetCheckpointError',
    'ShapeMismatchError',
    'UnplacedKeyError',
    'convert_checkpoint',
    'describe_layout',
    'detect_arch',
    'detect_layout',
    'expected_shapes',
    'layout_key',
    'layout_table',
    'load_reference_checkpoint',
    'map_key',
    'reference_names',
    'strip_module_prefix',
    'to_classifier',
    'to_reference_layout',
]
