"""A small, deterministic dataset of coloured shapes: COCO instances and semantic label maps.

Every image shows a noisy, randomly coloured background with one to four filled shapes (circles,
rectangles and triangles) of random colour, size and rotation. Each shape is an integer polygon
(a circle is a 32-gon) that is written to the annotation file and painted into the image through
the mask pycocotools makes of it, i.e. the mask that ``COCO.annToMask`` and MMDetection decode
from the annotation, so annotations and pixels agree exactly. (``cv2.fillPoly`` is not used for
painting: it also fills the pixels on the polygon's boundary, a ring of about one pixel that
COCO's rasterization leaves out.) Shapes never touch (their bounding boxes may overlap), so every
object is fully visible and its polygon is its true mask.

The layout under ``root`` is the usual COCO one, plus one semantic-segmentation label map per
image in the layout MMSegmentation's ``BaseSegDataset`` reads (``data_prefix=dict(
img_path='train', seg_map_path='seg_maps/train')``, both suffixes ``.png``)::

    root/
        train/000000.png ...
        val/000000.png ...
        annotations/instances_train.json
        annotations/instances_val.json
        seg_maps/train/000000.png ...      single-channel uint8: 0 background, 1 circle,
        seg_maps/val/000000.png ...        2 rectangle, 3 triangle (= the COCO category id)
        meta.json

A label map is painted from the very masks that paint the image, so every pixel's label is exact
and no pixel is ignored (no value 255).

Only ``numpy.random.default_rng(seed)`` is used for randomness, so the same arguments give the
same pixels and byte-identical annotation files.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from mmfish.utils.io import atomic_path

SHAPES_CLASSES = ('circle', 'rectangle', 'triangle')
# Semantic-segmentation classes: the label maps hold the index into this tuple.
SHAPES_SEG_CLASSES = ('background',) + SHAPES_CLASSES
SEG_MAP_DIR = 'seg_maps'

# Bump whenever the generated content changes for the same arguments (2: label maps added; the
# COCO files and images are byte-identical to version 1's).
SHAPES_FORMAT_VERSION = 2
# Recorded in meta.json to recognise directories made by this generator.
_GENERATOR = 'mmfish.datasets.generate_shapes_coco'

_SPLITS = ('train', 'val')
_MAX_OBJECTS = 4
_MIN_SIZE_FRAC = 0.2
_MAX_SIZE_FRAC = 0.5
_CIRCLE_VERTICES = 32
_PLACEMENT_TRIES = 50
# Minimal mean absolute difference (per channel, 0-255) between an object and the background.
_MIN_COLOUR_CONTRAST = 60
_MAX_IMAGE_SIZE = 4096
_PYCOCOTOOLS_COPY_WARNING = "__array__ implementation doesn't accept a copy keyword"


def generate_shapes_coco(
    root: str | os.PathLike,
    num_train: int = 300,
    num_val: int = 50,
    image_size: int = 256,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Generates the shapes dataset under ``root`` (or reuses an identical one).

    The dataset is written into a temporary directory next to ``root`` and renamed into place once
    complete, with ``meta.json`` written last, so an interrupted run never leaves a partial dataset
    at ``root``. If ``root/meta.json`` records the same arguments and format version and
    ``overwrite`` is False, nothing is written. A previous shapes dataset made with other arguments
    is replaced.

    Args:
        root: Output directory. Its parent directories are created if needed.
        num_train: Number of training images, at least 1.
        num_val: Number of validation images, at least 1.
        image_size: Side of the square images in pixels, from 64 to 4096.
        seed: Seed for ``numpy.random.default_rng``, a non-negative integer.
        overwrite: Regenerate even if an identical dataset is already present, and replace a
            non-empty ``root`` that is not a shapes dataset.

    Returns:
        A summary dict with keys ``root``, ``classes``, ``seg_classes``, ``meta`` and one entry
        per split (``train``, ``val``), each a dict with ``ann_file``, ``img_dir``,
        ``seg_map_dir``, ``num_images`` and ``num_annotations``.

    Raises:
        ValueError: If an argument is out of range or of the wrong type.
        FileExistsError: If ``root`` exists, is not empty and is not a shapes dataset, and
            ``overwrite`` is False.
    """
    _check_args(root, num_train, num_val, image_size, seed, overwrite)
    root = os.path.abspath(os.fspath(root))
    args = dict(num_train=num_train, num_val=num_val, image_size=image_size, seed=seed)
    args = {key: int(value) for key, value in args.items()}

    meta = _read_meta(root)
    if not overwrite and _meta_matches(meta, args):
        return _summary(root, meta)
    if not overwrite and meta is None and _is_non_empty(root):
        raise FileExistsError(
            f'{root} exists and is not a shapes dataset (no meta.json of this generator); '
            'pass overwrite=True to replace it'
        )

    # Written into a hidden sibling of root (made with the usual permissions, unlike
    # tempfile.mkdtemp), then renamed to root, replacing what was there.
    with atomic_path(root) as tmp_dir:
        os.makedirs(tmp_dir)
        meta = _write_dataset(tmp_dir, args)
    return _summary(root, meta)


def _check_args(root, num_train, num_val, image_size, seed, overwrite) -> None:
    """Raises a ValueError naming the first invalid argument."""
    if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
        raise ValueError(f'root must be a non-empty path, got {root!r}')
    limits = (
        ('num_train', num_train, 1, None),
        ('num_val', num_val, 1, None),
        ('image_size', image_size, 64, _MAX_IMAGE_SIZE),
        ('seed', seed, 0, None),
    )
    for arg_name, value, low, high in limits:
        is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not is_int or value < low or (high is not None and value > high):
            allowed = f'>= {low}' if high is None else f'in [{low}, {high}]'
            raise ValueError(f'{arg_name} must be an integer {allowed}, got {value!r}')
    if not isinstance(overwrite, bool):
        raise ValueError(f'overwrite must be a bool, got {overwrite!r}')


def _read_meta(root: str) -> dict | None:
    """Returns ``root/meta.json`` if it was written by this generator (any version), else None."""
    try:
        with open(os.path.join(root, 'meta.json'), encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and meta.get('generator') == _GENERATOR:
        return meta
    return None


def _meta_matches(meta: dict | None, args: dict) -> bool:
    """Whether ``meta`` describes a dataset made by this version with these arguments."""
    return (
        meta is not None
        and meta.get('version') == SHAPES_FORMAT_VERSION
        and meta.get('args') == args
    )


def _is_non_empty(path: str) -> bool:
    """Whether ``path`` is a file or a non-empty directory."""
    if os.path.isdir(path):
        return bool(os.listdir(path))
    return os.path.lexists(path)


def _summary(root: str, meta: dict) -> dict:
    """Builds the dict returned by :func:`generate_shapes_coco`."""
    summary = dict(root=root, classes=SHAPES_CLASSES, seg_classes=SHAPES_SEG_CLASSES, meta=meta)
    for split in _SPLITS:
        summary[split] = dict(
            ann_file=os.path.join(root, 'annotations', f'instances_{split}.json'),
            img_dir=os.path.join(root, split),
            seg_map_dir=os.path.join(root, SEG_MAP_DIR, split),
            num_images=meta['counts'][split]['num_images'],
            num_annotations=meta['counts'][split]['num_annotations'],
        )
    return summary


def _write_dataset(out_dir: str, args: dict) -> dict:
    """Writes both splits and ``meta.json`` (last) into ``out_dir`` and returns the meta dict."""
    rng = np.random.default_rng(args['seed'])
    os.makedirs(os.path.join(out_dir, 'annotations'))
    counts = {}
    for split in _SPLITS:
        coco = _write_split(out_dir, split, args[f'num_{split}'], args['image_size'], rng)
        counts[split] = dict(
            num_images=len(coco['images']), num_annotations=len(coco['annotations'])
        )
        _write_json(os.path.join(out_dir, 'annotations', f'instances_{split}.json'), coco)
    meta = dict(generator=_GENERATOR, version=SHAPES_FORMAT_VERSION, args=args, counts=counts)
    _write_json(os.path.join(out_dir, 'meta.json'), meta, indent=2)
    return meta


def _write_json(path: str, obj: dict, indent: int | None = None) -> None:
    """Writes ``obj`` as UTF-8 JSON; the same object always gives the same bytes."""
    separators = (',', ': ') if indent else (',', ':')
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=indent, separators=separators)
        f.write('\n')


def _write_split(
    out_dir: str, split: str, num_images: int, image_size: int, rng: np.random.Generator
) -> dict:
    """Draws and saves the images and label maps of one split; returns its COCO annotation dict."""
    img_dir = os.path.join(out_dir, split)
    seg_map_dir = os.path.join(out_dir, SEG_MAP_DIR, split)
    os.makedirs(img_dir)
    os.makedirs(seg_map_dir)
    images, annotations = [], []
    for index in range(num_images):
        image_id = index + 1
        file_name = f'{index:06d}.png'
        image, objects, seg_map = _draw_image(image_size, rng)
        _write_png(os.path.join(img_dir, file_name), image)
        _write_png(os.path.join(seg_map_dir, file_name), seg_map)
        images.append(dict(id=image_id, file_name=file_name, height=image_size, width=image_size))
        for category_id, polygon, area in objects:
            annotations.append(
                _annotation(len(annotations) + 1, image_id, category_id, polygon, area)
            )
    categories = [
        dict(id=index + 1, name=name, supercategory='shape')
        for index, name in enumerate(SHAPES_CLASSES)
    ]
    return dict(images=images, annotations=annotations, categories=categories)


def _write_png(path: str, pixels: np.ndarray) -> None:
    """Writes a uint8 image (BGR, or one channel) as PNG."""
    if not cv2.imwrite(path, pixels):
        raise OSError(f'could not write {path}')


def _annotation(
    ann_id: int, image_id: int, category_id: int, polygon: np.ndarray, area: int
) -> dict:
    """Makes a COCO annotation for an integer polygon of shape (N, 2) and its mask area."""
    x_min, y_min = polygon.min(axis=0)
    x_max, y_max = polygon.max(axis=0)
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        bbox=[int(x_min), int(y_min), int(x_max - x_min), int(y_max - y_min)],
        area=float(area),
        iscrowd=0,
        segmentation=[[int(v) for v in polygon.reshape(-1)]],
    )


def _polygon_mask(polygon: np.ndarray, image_size: int) -> np.ndarray:
    """Rasterizes a polygon of shape (N, 2) the way COCO does (``COCO.annToMask``).

    Returns:
        A C-contiguous uint8 mask of shape (image_size, image_size) with values 0 and 1.
    """
    flat = [float(v) for v in polygon.reshape(-1)]
    rles = mask_utils.frPyObjects([flat], image_size, image_size)
    with warnings.catch_warnings():
        # pycocotools <= 2.0.11 triggers a harmless numpy 2 DeprecationWarning on every decode.
        warnings.filterwarnings('ignore', _PYCOCOTOOLS_COPY_WARNING, DeprecationWarning)
        mask = mask_utils.decode(rles)
    return np.ascontiguousarray(mask[:, :, 0])


def _draw_image(image_size: int, rng: np.random.Generator) -> tuple[np.ndarray, list, np.ndarray]:
    """Draws one image.

    Returns:
        The BGR uint8 image; a list of ``(category_id, polygon, area)`` tuples, one per object:
        the polygon is an int32 array of shape (N, 2) of pixel coordinates and the area the
        number of pixels of its mask; and the uint8 label map of shape (image_size, image_size),
        0 for background and the ``category_id`` on each object's mask.
    """
    background = rng.integers(0, 256, size=3)
    image = np.empty((image_size, image_size, 3), dtype=np.float64)
    image[:] = background
    seg_map = np.zeros((image_size, image_size), dtype=np.uint8)
    occupied = np.zeros((image_size, image_size), dtype=np.uint8)
    objects = []
    num_objects = int(rng.integers(1, _MAX_OBJECTS + 1))
    for _ in range(num_objects):
        category_id = int(rng.integers(1, len(SHAPES_CLASSES) + 1))
        placed = place_shape(category_id, image_size, occupied, rng)
        if placed is None:  # no free room left for this object
            continue
        polygon, mask = placed
        image[mask.astype(bool)] = contrasting_colour(background, rng)
        seg_map[mask.astype(bool)] = category_id
        # Keep later objects a pixel away so that the masks never touch.
        occupied |= cv2.dilate(mask, np.ones((3, 3), np.uint8))
        objects.append((category_id, polygon, int(mask.sum())))
    noise_std = rng.uniform(4.0, 16.0)
    image += rng.normal(0.0, noise_std, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects, seg_map


def contrasting_colour(background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws a random colour that differs clearly from ``background``."""
    while True:
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - background).mean() >= _MIN_COLOUR_CONTRAST:
            return colour


def place_shape(
    category_id: int, image_size: int, occupied: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """Draws a random shape inside the image that does not touch the ``occupied`` pixels.

    Returns:
        The int32 polygon of shape (N, 2) and its uint8 mask, or None if no free place was found.
    """
    for _ in range(_PLACEMENT_TRIES):
        size = rng.uniform(_MIN_SIZE_FRAC, _MAX_SIZE_FRAC) * image_size
        offsets = _shape_offsets(SHAPES_CLASSES[category_id - 1], size, rng)
        # Centre range that keeps every vertex inside [0, image_size - 1].
        low = -offsets.min(axis=0)
        high = image_size - 1 - offsets.max(axis=0)
        centre = rng.uniform(low, high)
        polygon = np.rint(centre + offsets).astype(np.int32)
        polygon = np.clip(polygon, 0, image_size - 1)
        mask = _polygon_mask(polygon, image_size)
        if mask.any() and not (mask & occupied).any():
            return polygon, mask
    return None


def _shape_offsets(shape: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """Vertices of a randomly rotated shape of extent ``size`` around the origin, shape (N, 2)."""
    radius = size / 2
    if shape == 'circle':
        angles = np.arange(_CIRCLE_VERTICES) * (2 * np.pi / _CIRCLE_VERTICES)
        return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if shape == 'rectangle':
        half_w, half_h = radius, radius * rng.uniform(0.5, 1.0)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [half_w, half_h]
        return corners @ _rotation(rng.uniform(0, np.pi)).T
    if shape == 'triangle':
        angles = np.arange(3) * (2 * np.pi / 3) + rng.uniform(-0.3, 0.3, size=3)
        corners = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return corners @ _rotation(rng.uniform(0, 2 * np.pi)).T
    raise ValueError(f'unknown shape {shape!r}')


def _rotation(angle: float) -> np.ndarray:
    """2x2 matrix rotating column vectors by ``angle`` radians."""
    cos, sin = np.cos(angle), np.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])
