"""Checks of an image-classification config's data before training or testing (MMPretrain's
``CustomDataset`` and ``ImageNet``, folder or annotation-file layout), each failure one line
with the fix.

- The image folder (``data_root`` + ``data_prefix``, or ``split`` for ``ImageNet``) exists.
- Folder layout (no annotation file): every class of the config has a folder with images, no
  folder is left over, and the classes are listed in the folders' sorted order (MMPretrain
  numbers the classes by sorted folder name, whatever order the config lists them in: another
  order would train every class under another's name).
- Annotation file (``ann_file``, or ``meta/<split>.txt`` for ``ImageNet``): it exists, every
  line is ``path label`` with a label below the number of classes, every file exists.
- Every image file is non-empty and starts as an image does (PNG, JPEG, BMP, GIF, WebP, TIFF);
  at most :data:`MAX_HEADER_CHECKS` files are opened (evenly spread over the set), so that
  ImageNet's 1.28 million cost seconds. A file that is broken further in is found when it is
  loaded.
"""

import os
import os.path as osp
from typing import List, Optional, Sequence

from mmfish.utils.errors import listing

from .data_checks import DataCheckError

CLASSIFICATION_DATASETS = ('CustomDataset', 'ImageNet')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')
MAX_HEADER_CHECKS = 20000
_MAGIC = (
    b'\x89PNG\r\n\x1a\n',
    b'\xff\xd8\xff',
    b'BM',
    b'GIF8',
    b'II*\x00',
    b'MM\x00*',
    b'P5',
    b'P6',
)
_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def check_cls_data(cfg, loaders: Sequence[str] = _LOADERS) -> None:
    """Check the classification datasets of ``cfg``'s ``loaders``; raise
    :class:`~mmfish.datasets.data_checks.DataCheckError` on the first problem."""
    for name in loaders:
        dataset = (cfg.get(name) or {}).get('dataset')
        if (
            not dataset
            or str(dataset.get('type', '')).split('.')[-1] not in CLASSIFICATION_DATASETS
        ):
            continue
        _check_dataset(dataset, name)


def _check_dataset(dataset, loader: str) -> None:
    data_root = dataset.get('data_root') or ''
    split = dataset.get('split') if str(dataset['type']).endswith('ImageNet') else None
    prefix = dataset.get('data_prefix') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', '')
    ann_file = dataset.get('ann_file') or ''
    if split:
        prefix = prefix or split
        default_ann = osp.join(data_root, 'meta', f'{split}.txt')
        if not ann_file and osp.isfile(default_ann):
            ann_file = default_ann
    elif ann_file and not osp.isabs(ann_file):
        ann_file = osp.join(data_root, ann_file)
    folder = osp.join(data_root, prefix)
    option = f'{loader}.dataset.data_root'
    if not osp.isdir(folder):
        raise DataCheckError(
            f'{loader}: the image folder {folder} does not exist: put the images there or point '
            f'the config at them (--cfg-options {option}=PATH)'
        )
    classes = dataset.get('classes')
    if ann_file:
        files = _annotated_files(ann_file, folder, loader, len(classes) if classes else 1000)
    else:
        files = _folder_files(folder, loader, classes)
    _check_headers(files, loader)


def _folder_files(folder: str, loader: str, classes: Optional[Sequence[str]]) -> List[str]:
    folders = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if classes is not None:
        classes = list(classes)
        missing = [c for c in classes if c not in folders]
        if missing:
            raise DataCheckError(
                f'{loader}: no folder under {folder} for {listing(missing, 5, "class")} of the '
                "config: add a folder of images for each, or leave them out of the config's classes"
            )
        extra = [f for f in folders if f not in classes]
        if extra:
            raise DataCheckError(
                f'{loader}: no class of the config for {listing(extra, 5, "folder")} under '
                f'{folder}: add each to classes, or move it out'
            )
        if classes != folders:
            raise DataCheckError(
                f"{loader}: list the config's classes in the folders' sorted order, "
                f'{tuple(folders)}: MMPretrain numbers the classes by sorted folder name'
            )
    files, empty = [], []
    for name in folders:
        found = _images_under(osp.join(folder, name))
        if not found:
            empty.append(name)
        files += found
    if empty:
        raise DataCheckError(
            f'{loader}: no image ({", ".join(IMAGE_EXTENSIONS)}) in '
            f'{listing(empty, 5, "class folder")} under {folder}: add the images or remove it'
        )
    return files


def _images_under(folder: str) -> List[str]:
    found = []
    for dirpath, _, names in os.walk(folder):
        found += [
            osp.join(dirpath, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return found


def _annotated_files(ann_file: str, folder: str, loader: str, num_classes: int) -> List[str]:
    if not osp.isfile(ann_file):
        raise DataCheckError(
            f'{loader}: the annotation file {ann_file} does not exist: write it (one '
            "'path label' line per image) or drop ann_file to read the class folders"
        )
    files, bad_lines, missing = [], [], []
    with open(ann_file) as f:
        for number, line in enumerate(f, 1):
            parts = line.strip().rsplit(' ', 1)
            if not line.strip():
                continue
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= num_classes:
                bad_lines.append(number)
                continue
            path = osp.join(folder, parts[0])
            (files if osp.isfile(path) else missing).append(path)
    if bad_lines:
        raise DataCheckError(
            f"{loader}: {ann_file}: not 'path label' with a label below {num_classes}: "
            f"{listing(bad_lines, 5, 'line')}: fix each"
        )
    if missing:
        raise DataCheckError(
            f'{loader}: missing, {listing(missing, 3, "image")} of {ann_file}: restore each or '
            'remove its line'
        )
    return files


def _check_headers(files: List[str], loader: str) -> None:
    step = max(1, len(files) // MAX_HEADER_CHECKS)
    broken = [path for path in files[::step] if not _looks_like_an_image(path)]
    if broken:
        raise DataCheckError(
            f'{loader}: empty or not an image (by its first bytes), {listing(broken, 3, "file")}: '
            'replace or remove each'
        )


def _looks_like_an_image(path: str) -> bool:
    try:
        with open(path, 'rb') as f:
            head = f.read(12)
    except OSError:
        return False
    if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
        return True
    return any(head.startswith(magic) for magic in _MAGIC)


__all__ = ['CLASSIFICATION_DATASETS', 'MAX_HEADER_CHECKS', 'check_cls_data']
