from .shapes import SHAPES_CLASSES, generate_shapes_coco

__all__ = ['SHAPES_CLASSES', 'generate_shapes_coco']
