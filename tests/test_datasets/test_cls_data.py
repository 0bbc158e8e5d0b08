"""The classification shapes set, the authors' colour augmentation, and the checks of a
classification config's data (each failure one line that names the problem and the fix)."""

import json
import os

import numpy as np
import pytest
from mmengine.config import Config

from mmfish.datasets.cls_checks import check_cls_data
from mmfish.datasets.data_checks import DataCheckError
from mmfish.datasets.lighting import REFERENCE_EIGVAL, REFERENCE_EIGVEC, FishNetLighting
from mmfish.datasets.shapes_cls import generate_shapes_cls

CLASSES = ('circle', 'rectangle', 'triangle')


@pytest.fixture
def shapes_cls(tmp_path):
    root = tmp_path / 'shapes_cls'
    generate_shapes_cls(str(root), num_train=6, num_val=3, image_size=32)
    return root


def test_generated_set_is_balanced_and_deterministic(tmp_path):
    a = generate_shapes_cls(str(tmp_path / 'a'), num_train=9, num_val=3, image_size=32, seed=3)
    b = generate_shapes_cls(str(tmp_path / 'b'), num_train=9, num_val=3, image_size=32, seed=3)
    assert a == b and a['images']['train'] == dict.fromkeys(CLASSES, 3)
    for name in CLASSES:
        for image in os.listdir(tmp_path / 'a' / 'train' / name):
            assert (tmp_path / 'a' / 'train' / name / image).read_bytes() == (
                tmp_path / 'b' / 'train' / name / image
            ).read_bytes()
    # Asked again with the same arguments: nothing is written again.
    stamp = os.stat(tmp_path / 'a' / 'meta.json').st_mtime_ns
    generate_shapes_cls(str(tmp_path / 'a'), num_train=9, num_val=3, image_size=32, seed=3)
    assert os.stat(tmp_path / 'a' / 'meta.json').st_mtime_ns == stamp
    assert json.loads((tmp_path / 'a' / 'meta.json').read_text())['classes'] == list(CLASSES)


def test_lighting_adds_the_reference_quantity(monkeypatch):
    alpha = np.array([0.05, -0.1, 0.2])
    monkeypatch.setattr(np.random, 'normal', lambda *args, **kwargs: alpha)
    img = np.full((2, 2, 3), 100, np.uint8)
    out = FishNetLighting()(dict(img=img))['img']
    rgb = (np.array(REFERENCE_EIGVAL) * alpha) @ np.array(REFERENCE_EIGVEC) * 255
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], 100 + rgb[::-1], rtol=1e-6)  # BGR image
    # Unclipped: a dark pixel goes below 0 as the reference's float tensor does.
    dark = FishNetLighting()(dict(img=np.zeros((1, 1, 3), np.uint8)))['img']
    assert (dark < 0).any()


def config_for(root, classes=CLASSES, **dataset):
    return Config(
        dict(
            train_dataloader=dict(
                dataset=dict(
                    type='CustomDataset',
                    data_root=str(root),
                    data_prefix='train',
                    classes=classes,
                    **dataset,
                )
            )
        )
    )


def test_good_folder_passes(shapes_cls):
    check_cls_data(config_for(shapes_cls))


def test_missing_class_folder(shapes_cls):
    for image in (shapes_cls / 'train' / 'triangle').iterdir():
        image.unlink()
    (shapes_cls / 'train' / 'triangle').rmdir()
    with pytest.raises(DataCheckError, match=r'no folder under .*train for 1 class \(triangle\)'):
        check_cls_data(config_for(shapes_cls))


def test_classes_in_another_order(shapes_cls):
    with pytest.raises(DataCheckError, match='sorted order'):
        check_cls_data(config_for(shapes_cls, classes=('triangle', 'circle', 'rectangle')))


def test_corrupt_and_empty_images(shapes_cls):
    (shapes_cls / 'train' / 'circle' / '000000.png').write_bytes(b'not a png at all')
    (shapes_cls / 'train' / 'rectangle' / '000001.png').write_bytes(b'')
    with pytest.raises(DataCheckError, match=r'not an image .*2 files .*000000\.png'):
        check_cls_data(config_for(shapes_cls))


def test_annotation_file(shapes_cls):
    ann = shapes_cls / 'train.txt'
    ann.write_text('circle/000000.png 0\nrectangle/000001.png 1\n')
    check_cls_data(config_for(shapes_cls, ann_file='train.txt'))
    ann.write_text('circle/000000.png 0\nrectangle/gone.png 1\n')
    with pytest.raises(DataCheckError, match=r'missing, 1 image .*gone\.png'):
        check_cls_data(config_for(shapes_cls, ann_file='train.txt'))
    ann.write_text('circle/000000.png 3\n')  # 3 classes: labels 0-2
    with pytest.raises(DataCheckError, match=r"not 'path label' with a label below 3"):
        check_cls_data(config_for(shapes_cls, ann_file='train.txt'))
    ann.write_text('circle/000000.png cat\n')
    with pytest.raises(DataCheckError, match=r"not 'path label'.*1 line \(1\)"):
        check_cls_data(config_for(shapes_cls, ann_file='train.txt'))


def test_missing_image_folder(tmp_path):
    with pytest.raises(DataCheckError, match=r'train_dataloader.dataset.data_root=PATH'):
        check_cls_data(config_for(tmp_path / 'nowhere'))
