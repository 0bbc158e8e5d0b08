"""The segmentation data checks: label maps checked against the classes before training and
testing, on the segmentation demo's generated data (``seg_shapes``) and broken copies of it."""

import os
import os.path as osp
from typing import Callable

import cv2
import numpy as np
import pytest

from mmfish.datasets.data_checks import DataCheckError
from mmfish.datasets.seg_checks import allowed_label_values, check_seg_data
from mmfish.testing import TINY_SEG_CONFIG, seg_data_options, seg_demo_config

pytest.importorskip('mmseg')


def test_demo_data_passes_the_checks(seg_shapes):
    cfg = seg_demo_config(seg_shapes)
    checked = check_seg_data(cfg)
    assert checked == [osp.join(seg_shapes, 'train'), osp.join(seg_shapes, 'val')]


# ---------------------------------------------------------------------------------- bad input
@pytest.fixture()
def broken(tmp_path, seg_shapes) -> Callable[[], str]:
    """A fresh copy of the tiny dataset to break."""
    import shutil

    def copy() -> str:
        root = str(tmp_path / 'broken')
        shutil.copytree(seg_shapes, root)
        return root

    return copy


def _label(root: str, split: str = 'train', index: int = 3) -> str:
    return osp.join(root, 'seg_maps', split, f'{index:06d}.png')


def test_label_values_outside_the_classes(broken):
    root = broken()
    label = cv2.imread(_label(root), cv2.IMREAD_UNCHANGED)
    label[:4, :4] = 7
    label[-4:, -4:] = 255  # the ignore index is allowed
    cv2.imwrite(_label(root), label)
    with pytest.raises(DataCheckError) as info:
        check_seg_data(seg_demo_config(root))
    message = str(info.value)
    assert _label(root) in message and '[7]' in message
    assert 'train_dataloader' in message and '0..3' in message and 'ignore index 255' in message
    assert 'Map those pixels' in message


def test_ignore_index_alone_is_fine(broken):
    root = broken()
    label = cv2.imread(_label(root), cv2.IMREAD_UNCHANGED)
    label[:8] = 255
    cv2.imwrite(_label(root), label)
    check_seg_data(seg_demo_config(root))


def test_label_size_differs_from_image(broken):
    root = broken()
    label = cv2.imread(_label(root, 'val', 1), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(_label(root, 'val', 1), label[:48])
    with pytest.raises(DataCheckError) as info:
        check_seg_data(seg_demo_config(root))
    message = str(info.value)
    assert 'val_dataloader' in message and _label(root, 'val', 1) in message
    assert 'is 64x48' in message and osp.join(root, 'val', '000001.png') in message
    assert 'nearest-neighbour' in message


def test_missing_label_files(broken):
    root = broken()
    os.remove(_label(root, 'train', 2))
    os.remove(_label(root, 'train', 5))
    with pytest.raises(DataCheckError) as info:
        check_seg_data(seg_demo_config(root))
    message = str(info.value)
    assert '2 of 8 label maps are missing' in message
    assert _label(root, 'train', 2) in message and _label(root, 'train', 5) in message
    assert 'seg_map_path' in message


def test_colour_label_map_and_missing_image_dir(broken):
    root = broken()
    label = cv2.imread(_label(root), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(_label(root), np.stack([label] * 3, axis=-1))
    with pytest.raises(DataCheckError, match='not single-channel'):
        check_seg_data(seg_demo_config(root))
    cfg = seg_demo_config(root)
    cfg.val_dataloader.dataset.data_prefix.img_path = 'nowhere'
    with pytest.raises(DataCheckError, match=r'val_dataloader.*nowhere does not exist'):
        check_seg_data(cfg, ('val_dataloader',))


def test_allowed_label_values():
    assert allowed_label_values(3) == {0, 1, 2, 255}
    assert allowed_label_values(3, reduce_zero_label=True) == {0, 1, 2, 3, 255}
    assert allowed_label_values(2, label_map={0: 255, 1: 0, 2: 1}) == {0, 1, 2, 255}


def test_skip_switch(broken, monkeypatch):
    root = broken()
    os.remove(_label(root))
    monkeypatch.setenv('MMFISH_SKIP_DATA_CHECKS', '1')
    assert check_seg_data(seg_demo_config(root)) == []


def test_train_stops_on_bad_labels_before_the_runner(broken, tmp_path, run_tool):
    root = broken()
    os.remove(_label(root, 'val', 0))
    work_dir = tmp_path / 'work'
    out = run_tool(
        'train.py', TINY_SEG_CONFIG, '--work-dir', str(work_dir),
        '--cfg-options', *seg_data_options(root),
    )  # fmt: skip
    assert out.returncode != 0
    assert 'DataCheckError' in out.stderr and _label(root, 'val', 0) in out.stderr
    assert not work_dir.exists()  # stopped before the runner made anything
