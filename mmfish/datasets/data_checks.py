"""Check COCO-format annotation files before a run, with errors that name the file and the fix.

mmdet 3.3 reports bad data late or obscurely: a truncated annotation file is a bare
``JSONDecodeError`` without the file's name, a missing image is found only when the data loader
reaches it (possibly hours into training), annotations whose ``category_id`` is not among the
file's categories are silently dropped, and a config class missing from the file's categories
silently shifts the labels of the others; a box with a NaN or a negative side is silently
dropped, an empty segmentation stops a run that loads masks when the data loader reaches it.
:func:`check_coco_annotations` reads the annotation files of a config's dataloaders and
evaluators up front and raises :class:`DataCheckError` with every problem found: those above, a
box with a non-finite value or a negative side, an unusable polygon
(:mod:`mmfish.datasets.sample_checks`: empty, fewer than 3 points, non-finite) where the
pipeline loads masks, an empty image file. Set the environment variable
``MMFISH_SKIP_DATA_CHECKS=1`` to skip it. What is found only when a sample is loaded (a corrupt
image, a self-intersecting polygon) is skipped then (:mod:`mmfish.datasets.keyed`).
"""

import json
import os
import os.path as osp
import stat
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config

from mmfish.utils.errors import UserInputError
from mmfish.utils.mim import is_checkout

from .sample_checks import box_problem, segmentation_problem

SKIP_ENV = 'MMFISH_SKIP_DATA_CHECKS'
MAX_LISTED = 5


class DataCheckError(UserInputError):
    """A dataset file is missing, unreadable or inconsistent."""


def examples(items: Sequence[Any], width: Optional[int] = 80) -> str:
    """The first ``MAX_LISTED`` items (each cut to ``width`` characters), and how many in all."""
    listed = ', '.join(str(i)[:width] for i in items[:MAX_LISTED])
    return listed + (f' ... ({len(items)} in all)' if len(items) > MAX_LISTED else '')


def checks_skipped() -> bool:
    """Whether the user turned the data checks off (``MMFISH_SKIP_DATA_CHECKS=1``)."""
    return os.environ.get(SKIP_ENV, '') not in ('', '0')


def _is_remote(path: str) -> bool:
    return '://' in path or path.startswith('s3:')


def load_coco_json(ann_file: str, where: str) -> dict:
    """Read and parse a COCO annotation file; errors name the file and what to do."""
    if not osp.isfile(ann_file):
        relative = '' if osp.isabs(ann_file) else f' (relative to {os.getcwd()})'
        root = " (run from the repository root for the configs' data/... paths)"
        raise DataCheckError(
            f'{where}: annotation file {ann_file} does not exist{relative}. Put the dataset there'
            f'{root if is_checkout() else ""}, or point the config at it: data_root and ann_file '
            'in the config or with --cfg-options.'
        )
    size = osp.getsize(ann_file)
    try:
        with open(ann_file, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataCheckError(
            f'{where}: annotation file {ann_file} is not valid JSON ({e.msg} at line {e.lineno} '
            f'column {e.colno}, char {e.pos} of {size} bytes; truncated or corrupted?). '
            'Re-create or re-download it.'
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise DataCheckError(f'{where}: cannot read annotation file {ann_file}: {e}') from e
    if not isinstance(data, dict):
        raise DataCheckError(
            f'{where}: annotation file {ann_file} holds a JSON {type(data).__name__}, not a COCO '
            'object with "images", "annotations" and "categories".'
        )
    return data


def check_coco_data(
    data: dict,
    ann_file: str,
    where: str,
    img_dir: Optional[str] = None,
    classes: Optional[Sequence[str]] = None,
    require_annotations: bool = True,
    check_masks: bool = False,
) -> None:
    """Check a parsed COCO file: its keys, ids, category references, boxes and image files.

    Args:
        data: The parsed file.
        ann_file: Its path, for messages.
        where: What uses it (e.g. ``'train_dataloader'``), for messages.
        img_dir: Where its images' ``file_name`` are; None skips the image-file check.
        classes: The class names the config trains / evaluates; each must be a category name.
        require_annotations: Whether an ``annotations`` list is required (test-dev files have
            none).
        check_masks: Whether the polygons are checked too (the pipeline loads masks).
    """
    problems: List[str] = []
    required = ['images', 'categories'] + (['annotations'] if require_annotations else [])
    missing_keys = [k for k in required if not isinstance(data.get(k), list)]
    if missing_keys:
        raise DataCheckError(
            f'{where}: annotation file {ann_file} has no list {missing_keys} (keys present: '
            f'{sorted(data)}); a COCO file needs "images", "annotations" and "categories".'
        )
    categories, images = data['categories'], data['images']
    annotations = data.get('annotations') or []

    bad = [c for c in categories if not isinstance(c, dict) or 'id' not in c or 'name' not in c]
    if bad:
        problems.append(f'categories without "id" and "name": {examples(bad)}')
    cat_ids = [c['id'] for c in categories if isinstance(c, dict) and 'id' in c]
    names = [c.get('name') for c in categories if isinstance(c, dict)]
    if len(set(cat_ids)) != len(cat_ids):
        problems.append(f'duplicate category ids: {sorted(cat_ids)}')
    if classes is not None:
        unknown_classes = [c for c in classes if c not in names]
        if unknown_classes:
            problems.append(
                f"the config's classes {examples(unknown_classes)} are not category names of "
                f'the file ({examples(names)}): mmdet would silently shift the labels. Fix '
                'metainfo.classes in the config or the categories of the file'
            )

    keys = ('id', 'file_name', 'width', 'height')
    bad = [i.get('id', i) if isinstance(i, dict) else i for i in images
           if not isinstance(i, dict) or any(k not in i for k in keys)]  # fmt: skip
    if bad:
        problems.append(f'images without all of {keys}: {examples(bad)}')
    img_ids = [i['id'] for i in images if isinstance(i, dict) and 'id' in i]
    if len(set(img_ids)) != len(img_ids):
        problems.append('duplicate image ids')

    known_cats, known_imgs = set(cat_ids), set(img_ids)
    bad_cat: List[str] = []
    bad_img: List[str] = []
    bad_box: List[str] = []
    unusable_box: List[str] = []
    bad_polygon: List[str] = []
    for ann in annotations:
        if not isinstance(ann, dict):
            bad_box.append(repr(ann)[:40])
            continue
        ann_id = ann.get('id', '?')
        if ann.get('category_id') not in known_cats:
            bad_cat.append(f'id {ann_id}: category_id {ann.get("category_id")!r}')
        if ann.get('image_id') not in known_imgs:
            bad_img.append(f'id {ann_id}: image_id {ann.get("image_id")!r}')
        box, area = ann.get('bbox'), ann.get('area')
        if not (
            isinstance(box, (list, tuple))
            and len(box) == 4
            and all(isinstance(v, (int, float)) for v in box)
            and isinstance(area, (int, float))
        ):
            bad_box.append(f'id {ann_id}: bbox {box!r}, area {area!r}')
        else:
            problem = box_problem(box)
            if problem:
                unusable_box.append(f'id {ann_id}: {problem}')
        if check_masks and not ann.get('iscrowd'):
            problem = segmentation_problem(ann.get('segmentation'), self_intersecting=False)
            if problem:
                bad_polygon.append(f'id {ann_id}: {problem}')
    if bad_cat:
        problems.append(
            f"annotations with a category_id not among the file's categories {sorted(cat_ids)} "
            f'(mmdet would silently drop them): {examples(bad_cat)}'
        )
    if bad_img:
        problems.append(f'annotations of images not in "images": {examples(bad_img)}')
    if bad_box:
        problems.append(f'annotations without a bbox [x, y, w, h] and an area: {examples(bad_box)}')
    if unusable_box:
        problems.append(
            'annotations whose box has a non-finite value or a negative width or height (mmdet '
            f'would drop or train on them): {examples(unusable_box)}'
        )
    if bad_polygon:
        problems.append(
            'annotations whose segmentation the mask pipeline cannot use (mmdet would ignore the '
            f'object or stop when it loads it): {examples(bad_polygon)}'
        )

    if img_dir is not None and not _is_remote(img_dir):
        missing, empty = [], []
        for image in images:
            if not isinstance(image, dict) or 'file_name' not in image:
                continue
            size = _file_size(osp.join(img_dir, image['file_name']))
            if size is None:
                missing.append(image['file_name'])
            elif size == 0:
                empty.append(image['file_name'])
        if missing:
            problems.append(
                f'{len(missing)} of {len(images)} images are missing from {img_dir}: '
                f'{examples(missing)}. Check data_root / data_prefix.img, or restore the files'
            )
        if empty:
            problems.append(f'empty image files (0 bytes) in {img_dir}: {examples(empty)}')

    if problems:
        raise DataCheckError(
            f'{where}: annotation file {ann_file} has problems:\n  - ' + '\n  - '.join(problems)
        )


def _file_size(path: str) -> Optional[int]:
    """The size of a regular file, None if there is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def loads_masks(pipeline: Any) -> bool:
    """Whether a pipeline config loads instance masks (``LoadAnnotations`` with ``with_mask``)."""
    if isinstance(pipeline, dict):
        if str(pipeline.get('type', '')).split('.')[-1] == 'LoadAnnotations':
            return bool(pipeline.get('with_mask', False))
        return any(loads_masks(v) for v in pipeline.values())
    if isinstance(pipeline, (list, tuple)):
        return any(loads_masks(p) for p in pipeline)
    return False


def _leaf_datasets(dataset_cfg: Any) -> Iterator[Any]:
    """The leaf dataset configs of a (possibly wrapped or concatenated) dataset config."""
    if not isinstance(dataset_cfg, dict):
        return
    if isinstance(dataset_cfg.get('datasets'), (list, tuple)):
        for sub in dataset_cfg['datasets']:
            yield from _leaf_datasets(sub)
    elif isinstance(dataset_cfg.get('dataset'), dict):
        yield from _leaf_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def config_datasets(cfg: Config, loaders: Sequence[str]) -> Iterator[Tuple[str, Any]]:
    """``(loader name, leaf dataset config)`` for each dataset of the named dataloaders."""
    for name in loaders:
        loader = cfg.get(name)
        if isinstance(loader, dict):
            for ds in _leaf_datasets(loader.get('dataset')):
                yield name, ds


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) or _is_remote(path) else osp.join(root, path)


def check_coco_annotations(
    cfg: Config,
    loaders: Sequence[str] = ('train_dataloader', 'val_dataloader'),
    evaluators: Sequence[str] = ('val_evaluator',),
) -> List[str]:
    """Check the COCO annotation files (and their images) a config's run will read.

    Datasets whose ``ann_file`` is not a local ``.json`` file, or that read through
    ``backend_args`` (remote storage), are skipped. Call it before building the Runner:
    ``tools/train.py`` checks the train and val data, ``tools/test.py`` the test data.

    Returns:
        The annotation files checked.

    Raises:
        DataCheckError: naming the file, what is wrong with it, and the fix.
    """
    if checks_skipped():
        return []
    parsed: Dict[str, dict] = {}

    def load(path: str, where: str) -> dict:
        if path not in parsed:
            parsed[path] = load_coco_json(path, where)
        return parsed[path]

    checked: List[str] = []
    for name, ds in config_datasets(cfg, loaders):
        ann_file = ds.get('ann_file')
        if not isinstance(ann_file, str) or not ann_file.endswith('.json'):
            continue
        if ds.get('backend_args') or _is_remote(ann_file):
            continue
        root = ds.get('data_root') or ''
        ann_file = _join(root, ann_file)
        prefix = ds.get('data_prefix') or {}
        img = prefix.get('img', prefix.get('img_path')) if isinstance(prefix, dict) else None
        classes = (ds.get('metainfo') or {}).get('classes')
        where = f'{name}.dataset'
        check_coco_data(
            load(ann_file, where),
            ann_file,
            where,
            img_dir=_join(root, img) if isinstance(img, str) else None,
            classes=classes,
            require_annotations=not ds.get('test_mode', False),
            check_masks=loads_masks(ds.get('pipeline')),
        )
        checked.append(ann_file)

    for name in evaluators:
        evaluator = cfg.get(name)
        for ev in evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]:
            ann_file = ev.get('ann_file') if isinstance(ev, dict) else None
            if not isinstance(ann_file, str) or not ann_file.endswith('.json'):
                continue
            if ev.get('backend_args') or _is_remote(ann_file):
                continue
            check_coco_data(
                load(ann_file, name),
                ann_file,
                name,
                require_annotations=not ev.get('format_only', False),
            )
            checked.append(ann_file)
    return checked
