"""Tests of the synthetic COCO-format shapes dataset generator."""

import json
import os

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from mmfish.datasets import SHAPES_CLASSES, SHAPES_SEG_CLASSES, generate_shapes_coco

# pycocotools <= 2.0.11 warns on every mask decode under numpy 2 (COCO.annToMask).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

TINY = dict(num_train=6, num_val=3, image_size=96)


def _files(root):
    """Maps each file's path relative to ``root`` to its bytes."""
    contents = {}
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            with open(path, 'rb') as f:
                contents[os.path.relpath(path, root)] = f.read()
    return contents


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    """A tiny dataset shared by the read-only tests."""
    root = tmp_path_factory.mktemp('shapes') / 'data'
    generate_shapes_coco(str(root), seed=3, **TINY)
    return root


def test_summary_and_layout(tmp_path):
    root = tmp_path / 'shapes'
    summary = generate_shapes_coco(str(root), seed=0, **TINY)
    assert summary['classes'] == SHAPES_CLASSES == ('circle', 'rectangle', 'triangle')
    assert summary['seg_classes'] == SHAPES_SEG_CLASSES == ('background', *SHAPES_CLASSES)
    assert summary['root'] == str(root)
    for split, num_images in (('train', 6), ('val', 3)):
        info = summary[split]
        assert info['ann_file'] == str(root / 'annotations' / f'instances_{split}.json')
        assert info['img_dir'] == str(root / split)
        assert info['seg_map_dir'] == str(root / 'seg_maps' / split)
        assert sorted(os.listdir(info['seg_map_dir'])) == sorted(os.listdir(info['img_dir']))
        assert info['num_images'] == num_images
        assert sorted(os.listdir(info['img_dir'])) == [f'{i:06d}.png' for i in range(num_images)]
        with open(info['ann_file']) as f:
            coco = json.load(f)
        assert len(coco['images']) == num_images
        assert info['num_annotations'] == len(coco['annotations']) >= num_images
    meta = json.loads((root / 'meta.json').read_text())
    assert meta['args'] == dict(num_train=6, num_val=3, image_size=96, seed=0)
    assert isinstance(meta['version'], int)
    # Nothing but the dataset is left next to it (no temporary directories).
    assert os.listdir(tmp_path) == ['shapes']


def test_determinism(tmp_path):
    generate_shapes_coco(str(tmp_path / 'a'), seed=7, **TINY)
    generate_shapes_coco(str(tmp_path / 'b'), seed=7, **TINY)
    generate_shapes_coco(str(tmp_path / 'c'), seed=8, **TINY)
    files_a, files_b, files_c = (_files(tmp_path / name) for name in 'abc')
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    for name in ('annotations/instances_train.json', 'annotations/instances_val.json'):
        assert files_a[name] != files_c[name]
    assert files_a['train/000000.png'] != files_c['train/000000.png']
    assert files_a['seg_maps/val/000000.png'] != files_c['seg_maps/val/000000.png']
    # Decoded pixels agree too, not only the PNG bytes.
    img_a = cv2.imread(str(tmp_path / 'a' / 'val' / '000002.png'))
    img_b = cv2.imread(str(tmp_path / 'b' / 'val' / '000002.png'))
    np.testing.assert_array_equal(img_a, img_b)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_annotations_are_consistent(shapes_root, split):
    coco = COCO(str(shapes_root / 'annotations' / f'instances_{split}.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES_CLASSES)
    assert coco.getCatIds() == [1, 2, 3]
    assert len(coco.getImgIds()) == TINY[f'num_{split}']
    ann_ids = [ann['id'] for ann in coco.dataset['annotations']]
    assert len(set(ann_ids)) == len(ann_ids) and min(ann_ids) >= 1
    for img_info in coco.loadImgs(coco.getImgIds()):
        image = cv2.imread(str(shapes_root / split / img_info['file_name']))
        assert image is not None
        assert image.shape == (img_info['height'], img_info['width'], 3)
        assert image.shape[:2] == (TINY['image_size'],) * 2
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_info['id']))
        assert 1 <= len(anns) <= 4
        union = np.zeros(image.shape[:2], dtype=np.int32)
        for ann in anns:
            assert ann['iscrowd'] == 0
            assert ann['category_id'] in (1, 2, 3)
            polygon = ann['segmentation']
            assert isinstance(polygon, list) and len(polygon) == 1 and len(polygon[0]) >= 6
            mask = coco.annToMask(ann)
            assert mask.shape == image.shape[:2]
            assert mask.sum() > 0
            assert mask.sum() == ann['area']
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= img_info['width'] and y + h <= img_info['height']
            rows, cols = np.nonzero(mask)
            assert cols.min() >= x and cols.max() <= x + w
            assert rows.min() >= y and rows.max() <= y + h
            union += mask
        # Objects never overlap, so every object is fully visible.
        assert union.max() == 1


@pytest.mark.parametrize('split', ['train', 'val'])
def test_label_maps_are_the_coco_masks(shapes_root, split):
    """One single-channel label map per image: 0 background, else the COCO category id."""
    coco = COCO(str(shapes_root / 'annotations' / f'instances_{split}.json'))
    names = sorted(os.listdir(shapes_root / 'seg_maps' / split))
    assert names == sorted(os.listdir(shapes_root / split))
    for img_info in coco.loadImgs(coco.getImgIds()):
        label = cv2.imread(
            str(shapes_root / 'seg_maps' / split / img_info['file_name']), cv2.IMREAD_UNCHANGED
        )
        assert label.dtype == np.uint8 and label.shape == (img_info['height'], img_info['width'])
        expected = np.zeros_like(label)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_info['id'])):
            expected[coco.annToMask(ann).astype(bool)] = ann['category_id']
        np.testing.assert_array_equal(label, expected)
        assert set(np.unique(label)) <= {0, 1, 2, 3}


def test_objects_are_visible_in_pixels(shapes_root):
    coco = COCO(str(shapes_root / 'annotations' / 'instances_train.json'))
    for img_info in coco.loadImgs(coco.getImgIds()):
        image = cv2.imread(str(shapes_root / 'train' / img_info['file_name'])).astype(np.float64)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_info['id']))
        masks = [coco.annToMask(ann).astype(bool) for ann in anns]
        background = image[~np.any(masks, axis=0)].mean(axis=0)
        for mask in masks:
            inside = image[mask]
            assert np.abs(inside.mean(axis=0) - background).mean() > 30
            # The mask holds only the object's flat colour (plus noise), no background pixels ...
            assert inside.std(axis=0).max() < 30
            # ... and the pixels just outside it are background: the paint matches the mask.
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            ring &= ~mask
            assert np.abs(image[ring].mean(axis=0) - background).mean() < 15


def test_idempotent_and_overwrite(tmp_path):
    root = tmp_path / 'shapes'
    first = generate_shapes_coco(str(root), seed=1, **TINY)
    paths = [root / 'meta.json', root / 'annotations' / 'instances_train.json']
    paths.append(root / 'train' / '000000.png')
    mtimes = [os.stat(path).st_mtime_ns for path in paths]
    inode = os.stat(root).st_ino

    second = generate_shapes_coco(str(root), seed=1, **TINY)
    assert second == first
    assert [os.stat(path).st_mtime_ns for path in paths] == mtimes
    assert os.stat(root).st_ino == inode

    contents = _files(root)
    third = generate_shapes_coco(str(root), seed=1, overwrite=True, **TINY)
    assert third == first
    assert os.stat(root).st_ino != inode  # a freshly written directory
    assert _files(root) == contents
    assert os.listdir(tmp_path) == ['shapes']

    # Other arguments replace the dataset.
    fourth = generate_shapes_coco(str(root), seed=1, num_train=2, num_val=1, image_size=64)
    assert fourth['train']['num_images'] == 2
    assert sorted(os.listdir(root / 'train')) == ['000000.png', '000001.png']


def test_foreign_root_is_not_replaced(tmp_path):
    root = tmp_path / 'shapes'
    (root / 'train').mkdir(parents=True)
    (root / 'train' / 'stray.png').write_bytes(b'')
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_shapes_coco(str(root), **TINY)
    summary = generate_shapes_coco(str(root), overwrite=True, **TINY)
    assert summary['train']['num_images'] == 6
    assert not (root / 'train' / 'stray.png').exists()
    # A meta.json written by something else does not make a directory a shapes dataset.
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'meta.json').write_text('{"version": 1}')
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_shapes_coco(str(other), **TINY)


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    from mmfish.datasets import shapes

    write_split = shapes._write_split

    def write_train_then_fail(out_dir, split, *args):
        if split == 'val':
            raise KeyboardInterrupt
        return write_split(out_dir, split, *args)

    monkeypatch.setattr(shapes, '_write_split', write_train_then_fail)
    with pytest.raises(KeyboardInterrupt):
        generate_shapes_coco(str(tmp_path / 'shapes'), **TINY)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    'kwargs, name',
    [
        (dict(num_train=0), 'num_train'),
        (dict(num_train=2.5), 'num_train'),
        (dict(num_val=0), 'num_val'),
        (dict(image_size=63), 'image_size'),
        (dict(image_size=True), 'image_size'),
        (dict(seed=-1), 'seed'),
        (dict(overwrite='yes'), 'overwrite'),
        (dict(root=''), 'root'),
    ],
)
def test_bad_arguments(tmp_path, kwargs, name):
    kwargs = dict(dict(root=str(tmp_path / 'shapes')), **kwargs)
    with pytest.raises(ValueError, match=name):
        generate_shapes_coco(**kwargs)
    assert not (tmp_path / 'shapes').exists()


def test_mmdet_coco_dataset_loads_it(shapes_root):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules

    register_all_modules()
    with open(shapes_root / 'annotations' / 'instances_train.json') as f:
        num_anns = len(json.load(f)['annotations'])
    dataset = CocoDataset(
        data_root=str(shapes_root),
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        metainfo=dict(classes=SHAPES_CLASSES),
        pipeline=[],
        test_mode=False,
    )
    assert len(dataset) == TINY['num_train']
    assert dataset.metainfo['classes'] == SHAPES_CLASSES
    instances = [
        instance for i in range(len(dataset)) for instance in dataset.get_data_info(i)['instances']
    ]
    assert len(instances) == num_anns
    assert all(instance['ignore_flag'] == 0 for instance in instances)
    assert {instance['bbox_label'] for instance in instances} <= {0, 1, 2}
    assert all(len(instance['mask'][0]) >= 6 for instance in instances)
    first = dataset.get_data_info(0)
    assert os.path.isfile(first['img_path'])
    assert (first['height'], first['width']) == (TINY['image_size'],) * 2
