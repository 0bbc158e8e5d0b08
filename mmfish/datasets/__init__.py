from .shapes import SHAPES_CLASSES, SHAPES_SEG_CLASSES, generate_shapes_coco

__all__ = ['SHAPES_CLASSES', 'SHAPES_SEG_CLASSES', 'generate_shapes_coco']
