"""A small, deterministic image-classification set of coloured shapes, in MMPretrain's folder
format.

Every image shows one filled shape (circle, rectangle or triangle; random colour, size, rotation
and place) on a noisy, randomly coloured background, drawn by the same code as the detection set
(:mod:`mmfish.datasets.shapes`). Classes are balanced (image ``i`` shows class ``i % 3``), so
always answering one class scores 1/3. The layout is ImageFolder's, which MMPretrain's
``CustomDataset`` reads with ``data_prefix='train'`` (classes sorted by name)::

    root/
        train/circle/000000.png ...
        train/rectangle/000001.png ...
        train/triangle/000002.png ...
        val/...
        meta.json

Only ``numpy.random.default_rng(seed)`` is used, so the same arguments give the same pixels.
"""

import json
import os
import os.path as osp
import shutil

import cv2
import numpy as np

from mmfish.utils.io import atomic_path, write_text_atomically

from .shapes import SHAPES_CLASSES, contrasting_colour, place_shape

SHAPES_CLS_FORMAT_VERSION = 1
_SPLITS = ('train', 'val')


def generate_shapes_cls(
    root: str,
    num_train: int = 600,
    num_val: int = 150,
    image_size: int = 64,
    seed: int = 0,
) -> dict:
    """Write the set under ``root`` unless ``root/meta.json`` says it holds this very set.

    Returns:
        The meta: the arguments, the classes and the number of images per split and class.
    """
    if min(num_train, num_val) < len(SHAPES_CLASSES):
        raise ValueError(f'need at least {len(SHAPES_CLASSES)} images per split (one per class)')
    if image_size < 32:
        raise ValueError(
            f'image_size={image_size}: at least 32 pixels (FishNet takes multiples of 32)'
        )
    args = dict(
        version=SHAPES_CLS_FORMAT_VERSION,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        seed=seed,
    )
    meta_path = osp.join(root, 'meta.json')
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get('args') == args:
            return meta
    rng = np.random.default_rng(seed)
    counts = {}
    for split, number in zip(_SPLITS, (num_train, num_val)):
        split_dir = osp.join(root, split)
        if osp.isdir(split_dir):
            shutil.rmtree(split_dir)  # a set of other arguments: written again
        per_class = dict.fromkeys(SHAPES_CLASSES, 0)
        for i in range(number):
            name = SHAPES_CLASSES[i % len(SHAPES_CLASSES)]
            image = _draw_one(name, image_size, rng)
            path = osp.join(split_dir, name, f'{i:06d}.png')
            os.makedirs(osp.dirname(path), exist_ok=True)
            ok, png = cv2.imencode('.png', image)
            if not ok:
                raise OSError(f'could not encode {path}')
            with atomic_path(path) as tmp, open(tmp, 'wb') as f:
                f.write(png.tobytes())
            per_class[name] += 1
        counts[split] = per_class
    meta = dict(args=args, classes=list(SHAPES_CLASSES), images=counts)
    write_text_atomically(meta_path, json.dumps(meta, indent=2) + '\n')  # last: marks it complete
    return meta


def _draw_one(name: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One BGR uint8 image with one shape of class ``name``."""
    background = rng.integers(0, 256, size=3)
    image = np.empty((image_size, image_size, 3), dtype=np.float64)
    image[:] = background
    occupied = np.zeros((image_size, image_size), dtype=np.uint8)
    placed = place_shape(SHAPES_CLASSES.index(name) + 1, image_size, occupied, rng)
    if placed is None:  # cannot happen on an empty image; kept as a guard
        raise RuntimeError(f'could not place a {name} in a {image_size}-pixel image')
    _, mask = placed
    image[mask.astype(bool)] = contrasting_colour(background, rng)
    image += rng.normal(0.0, rng.uniform(4.0, 16.0), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


__all__ = ['SHAPES_CLS_FORMAT_VERSION', 'generate_shapes_cls']
