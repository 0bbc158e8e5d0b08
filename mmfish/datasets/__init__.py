from .data_checks import DataCheckError, check_coco_annotations
from .shapes import SHAPES_CLASSES, SHAPES_SEG_CLASSES, generate_shapes_coco

__all__ = [
    'SHAPES_CLASSES',
    'SHAPES_SEG_CLASSES',
    'DataCheckError',
    'check_coco_annotations',
    'generate_shapes_coco',
]
