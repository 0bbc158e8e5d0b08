"""Check semantic-segmentation data before a run, with errors that name the file and the fix.

MMSegmentation 1.x reads a label map only when the data loader reaches it (``LoadAnnotations`` in
the pipeline), possibly hours into training: a missing file stops the run then, and a label map
of another size than its image, or with values that are neither a class index nor the ignore
index, fails later still, in a transform or in the loss, with an error that names no file (or,
for some sizes and values, not at all). :func:`check_seg_data` reads every label map of a
config's segmentation datasets up front and raises
:class:`~mmfish.datasets.data_checks.DataCheckError` with every problem found, naming the files and
the fix. ``MMFISH_SKIP_DATA_CHECKS=1`` skips it, as it does the COCO checks.

A dataset config is taken for a segmentation one when its ``data_prefix`` has a
``seg_map_path`` (mmseg's ``BaseSegDataset`` convention). The dataset is built (lazily, without
its pipeline) from mmseg's registry, so the file list, suffixes, ``reduce_zero_label`` and
``label_map`` are exactly what the run will use.
"""

import os.path as osp
from typing import Any, List, Optional, Sequence, Set

import numpy as np
from mmengine.config import Config
from PIL import Image

from mmfish.datasets.data_checks import DataCheckError, checks_skipped, config_datasets, examples


def is_seg_dataset(dataset_cfg: Any) -> bool:
    """Whether a dataset config is an mmseg one: its ``data_prefix`` names ``seg_map_path``."""
    prefix = dataset_cfg.get('data_prefix') if isinstance(dataset_cfg, dict) else None
    return isinstance(prefix, dict) and 'seg_map_path' in prefix


def _loads_annotations(pipeline: Any) -> bool:
    """Whether a pipeline config reads label maps (a ``LoadAnnotations`` anywhere in it)."""
    if isinstance(pipeline, dict):
        if str(pipeline.get('type', '')).split('.')[-1] == 'LoadAnnotations':
            return True
        return any(_loads_annotations(v) for v in pipeline.values())
    if isinstance(pipeline, (list, tuple)):
        return any(_loads_annotations(p) for p in pipeline)
    return False


def allowed_label_values(
    num_classes: int,
    ignore_index: int = 255,
    reduce_zero_label: bool = False,
    label_map: Optional[dict] = None,
) -> Set[int]:
    """The values a label map file may hold, before mmseg's ``LoadAnnotations`` maps them.

    ``label_map`` (old id -> new id, set by mmseg when ``metainfo.classes`` is a subset of the
    dataset's) makes its keys the valid values; ``reduce_zero_label`` shifts the classes to
    1..num_classes (0, the "other" label, becomes the ignore index).
    """
    if label_map:
        values = set(label_map)
    elif reduce_zero_label:
        values = set(range(num_classes + 1))
    else:
        values = set(range(num_classes))
    return values | {ignore_index}


def _read_label_map(path: str) -> np.ndarray:
    """The label map as mmseg reads it (pillow, 'unchanged': palette PNGs give their indices)."""
    with Image.open(path) as img:
        return np.asarray(img)


def _image_size(path: str) -> Optional[tuple]:
    """(width, height) from the image's header, or None if it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError):
        return None


def check_seg_dataset(dataset: Any, where: str) -> None:
    """Check one built mmseg dataset: images found, every label map present, sized and valued.

    Args:
        dataset: A ``BaseSegDataset`` built with ``lazy_init=True`` (its file list is read here).
        where: What uses it (e.g. ``'train_dataloader.dataset'``), for messages.

    Raises:
        DataCheckError: naming the files, what is wrong with them, and the fix.
    """
    img_dir = dataset.data_prefix.get('img_path') or ''
    seg_dir = dataset.data_prefix.get('seg_map_path') or ''
    if not dataset.ann_file and not osp.isdir(img_dir):
        raise DataCheckError(
            f'{where}: image directory {img_dir} does not exist. Check data_root and '
            'data_prefix.img_path in the config (or --cfg-options), or create the dataset.'
        )
    if dataset.ann_file and not osp.isfile(dataset.ann_file):
        raise DataCheckError(
            f'{where}: split file (ann_file) {dataset.ann_file} does not exist. Fix ann_file, '
            "or set ann_file='' to use every image of data_prefix.img_path."
        )
    data_list = dataset.load_data_list()
    if not data_list:
        raise DataCheckError(
            f'{where}: no image ending in {dataset.img_suffix!r} found in {img_dir}. Check '
            'data_prefix.img_path and img_suffix in the config.'
        )
    classes = dataset.metainfo.get('classes') or ()
    allowed = allowed_label_values(
        len(classes), dataset.ignore_index, dataset.reduce_zero_label, dataset.label_map
    )
    missing: List[str] = []
    missing_images: List[str] = []
    bad_size: List[str] = []
    bad_values: List[str] = []
    bad_channels: List[str] = []
    for info in data_list:
        img_path, seg_path = info['img_path'], info.get('seg_map_path')
        img_size = _image_size(img_path)
        if img_size is None:
            missing_images.append(img_path)
        if seg_path is None:
            continue
        if not osp.isfile(seg_path):
            missing.append(seg_path)
            continue
        try:
            label = _read_label_map(seg_path)
        except (OSError, ValueError) as e:
            missing.append(f'{seg_path} (unreadable: {e})')
            continue
        if label.ndim != 2:
            bad_channels.append(f'{seg_path} (shape {label.shape})')
            continue
        if img_size is not None and (label.shape[1], label.shape[0]) != tuple(img_size):
            bad_size.append(
                f'{seg_path} is {label.shape[1]}x{label.shape[0]}, its image {img_path} is '
                f'{img_size[0]}x{img_size[1]}'
            )
        values = np.unique(label)
        outside = [int(v) for v in values if int(v) not in allowed]
        if outside:
            bad_values.append(f'{seg_path}: {outside}')

    problems: List[str] = []
    if missing_images:
        problems.append(
            f'{len(missing_images)} images cannot be read: {examples(missing_images, width=None)}'
        )
    if missing:
        problems.append(
            f'{len(missing)} of {len(data_list)} label maps are missing from {seg_dir}: '
            f'{examples(missing, width=None)}. Each image <name>{dataset.img_suffix} needs a '
            f'label map <name>{dataset.seg_map_suffix} there: check data_prefix.seg_map_path '
            'and seg_map_suffix in the config, or restore the files'
        )
    if bad_channels:
        problems.append(
            f'label maps that are not single-channel: {examples(bad_channels, width=None)}. '
            'Save them as one-channel (grayscale or palette) PNGs of class indices, not colour '
            'images'
        )
    if bad_size:
        problems.append(
            f'label maps whose size differs from their image: {examples(bad_size, width=None)}. '
            'Make each label map the size of its image (resize with nearest-neighbour '
            'interpolation), or fix which image it is paired with'
        )
    if bad_values:
        if dataset.label_map:
            valid = f"the ids of the dataset's own classes {sorted(set(dataset.label_map))}"
        elif dataset.reduce_zero_label:
            valid = f'0 (ignored, reduce_zero_label=True) and 1..{len(classes)}'
        else:
            valid = f'0..{len(classes) - 1}'
        problems.append(
            f'label maps with values outside the {len(classes)} classes ({valid}) and the '
            f'ignore index {dataset.ignore_index}: {examples(bad_values, width=None)}. Map those '
            f'pixels to a class index or to {dataset.ignore_index}, or fix metainfo.classes / '
            'reduce_zero_label in the config'
        )
    if problems:
        raise DataCheckError(
            f'{where}: segmentation data has problems:\n  - ' + '\n  - '.join(problems)
        )


def _build_lazy(dataset_cfg: dict) -> Any:
    import mmseg.datasets  # noqa: F401  (registers mmseg's dataset classes)
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS

    cfg = dict(dataset_cfg, pipeline=[], lazy_init=True)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(cfg)


def check_seg_data(
    cfg: Config, loaders: Sequence[str] = ('train_dataloader', 'val_dataloader')
) -> List[str]:
    """Check the segmentation datasets a config's run will read, before the run.

    For each leaf dataset of the named dataloaders that is an mmseg one (``data_prefix`` with
    ``seg_map_path``), local and whose pipeline reads label maps: the image directory (or split
    file) exists and holds images; every image has its label map; each label map is
    single-channel, of its image's size, and holds only class indices and the ignore index.
    Reads every label map in full and every image's header.

    Returns:
        The image directories (or split files) checked.

    Raises:
        DataCheckError: naming the file, what is wrong with it, and the fix.
    """
    if checks_skipped():
        return []
    checked: List[str] = []
    for name, ds in config_datasets(cfg, loaders):
        if not is_seg_dataset(ds) or ds.get('backend_args'):
            continue
        if 'pipeline' in ds and not _loads_annotations(ds['pipeline']):
            continue  # no label maps read (e.g. a test set without labels)
        try:
            dataset = _build_lazy(ds)
        except ImportError:
            return checked  # no mmseg: the run cannot use this dataset anyway
        check_seg_dataset(dataset, f'{name}.dataset')
        checked.append(dataset.ann_file or dataset.data_prefix.get('img_path', ''))
    return checked
