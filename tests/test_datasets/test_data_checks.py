"""Data checks before training and testing: bad COCO data stops the tools with the file and the
fix named; quirky but valid data (grayscale, RGBA, empty and tiny images) trains and evaluates."""

import glob
import json
import os
import os.path as osp
import shutil
import subprocess
from typing import Any, Callable, Dict, List

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmfish.datasets.data_checks import DataCheckError, check_coco_annotations
from mmfish.testing import TINY_CONFIG


# ------------------------------------------------------------------------------------ helpers
def _copy_dataset(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _dump_json(data: dict, path: str) -> None:
    with open(path, 'w') as f:
        json.dump(data, f)


def _infos(dataset: Any) -> List[dict]:
    """A built dataset's data infos (``data_list`` is emptied once serialised)."""
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _metrics(work_dir: str) -> Dict[str, float]:
    """The COCO metrics of the last evaluation logged in a work dir."""
    entries = []
    for path in glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            entries += [json.loads(line) for line in f]
    evals = [e for e in entries if 'coco/bbox_mAP' in e]
    assert evals, 'no evaluation was logged'
    return {k: v for k, v in evals[-1].items() if k.startswith('coco/')}


# ------------------------------------------------------------------------------- bad data
@pytest.fixture
def cfg_for(data_opts: Callable) -> Callable[[str], Config]:
    """The tiny config pointed at a dataset, as tools/train.py would load it."""

    def make(root: str) -> Config:
        cfg = Config.fromfile(TINY_CONFIG)
        cfg.merge_from_dict(dict(o.split('=', 1) for o in data_opts(root)))
        return cfg

    return make


def test_good_data_passes(cfg_for: Callable, tiny_shapes: str) -> None:
    checked = check_coco_annotations(cfg_for(tiny_shapes))
    assert sorted(set(checked)) == sorted(
        osp.join(tiny_shapes, 'annotations', f'instances_{s}.json') for s in ('train', 'val')
    )


def test_missing_annotation_file(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    os.remove(osp.join(root, 'annotations', 'instances_train.json'))
    with pytest.raises(DataCheckError, match='instances_train.json does not exist'):
        check_coco_annotations(cfg_for(root))


def test_truncated_json_names_the_file(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_val.json')
    with open(ann, 'rb') as f:
        text = f.read()
    with open(ann, 'wb') as f:
        f.write(text[:100])
    # mmdet's own error: a bare JSONDecodeError that does not say which file.
    from mmdet.datasets import CocoDataset

    with pytest.raises(json.JSONDecodeError) as mmdet_error:
        CocoDataset(ann_file=ann, data_prefix=dict(img=''), pipeline=[], lazy_init=False)
    assert ann not in str(mmdet_error.value)
    with pytest.raises(DataCheckError) as ours:
        check_coco_annotations(cfg_for(root))
    message = str(ours.value)
    assert ann in message and 'not valid JSON' in message and 'of 100 bytes' in message


@pytest.mark.parametrize(
    'edit, expected',
    [
        (lambda d: d.pop('categories'), r"no list \['categories'\]"),
        (lambda d: d.update(images={}), r"no list \['images'\]"),
        (lambda d: d['annotations'][0].pop('bbox'), 'without a bbox'),
        (lambda d: d['annotations'][1].pop('area'), r'id 2: bbox \[.*\], area None'),
        (lambda d: d['annotations'][0].update(image_id=999), 'image_id 999'),
        (lambda d: d['images'][1].update(id=d['images'][0]['id']), 'duplicate image ids'),
        (lambda d: d['categories'][0].update(name='disc'), r'classes circle are not category'),
    ],
    ids=[
        'no-categories',
        'images-not-a-list',
        'no-bbox',
        'no-area',
        'unknown-image',
        'dup-image',
        'class-names',
    ],
)
def test_malformed_annotations(
    cfg_for: Callable, tmp_path, tiny_shapes: str, edit: Callable, expected: str
) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_train.json')
    data = _load_json(ann)
    edit(data)
    _dump_json(data, ann)
    with pytest.raises(DataCheckError, match=expected) as error:
        check_coco_annotations(cfg_for(root))
    assert ann in str(error.value)


def test_unknown_category_id(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_train.json')
    data = _load_json(ann)
    data['annotations'][0]['category_id'] = 7
    _dump_json(data, ann)
    # mmdet drops the annotation without a word: image 1 loses an object.
    from mmdet.datasets import CocoDataset

    classes = ('circle', 'rectangle', 'triangle')
    dataset = CocoDataset(
        ann_file=ann, metainfo=dict(classes=classes), data_prefix=dict(img=''), pipeline=[]
    )
    img_id = data['annotations'][0]['image_id']
    n_anns = sum(a['image_id'] == img_id for a in data['annotations'])
    info = next(d for d in _infos(dataset) if d['img_id'] == img_id)
    assert len(info['instances']) == n_anns - 1
    ann_id = data['annotations'][0]['id']
    with pytest.raises(DataCheckError, match=f'id {ann_id}: category_id 7'):
        check_coco_annotations(cfg_for(root))


def test_missing_images_are_listed(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    for name in ('000001.png', '000003.png'):
        os.remove(osp.join(root, 'val', name))
    with pytest.raises(DataCheckError) as error:
        check_coco_annotations(cfg_for(root))
    message = str(error.value)
    assert 'instances_val.json' in message
    assert '2 of 4 images are missing from' in message and '000001.png, 000003.png' in message


def test_test_dev_without_annotations_and_skip_switch(
    cfg_for: Callable, tmp_path, tiny_shapes, monkeypatch
) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_val.json')
    data = _load_json(ann)
    data.pop('annotations')
    _dump_json(data, ann)
    cfg = cfg_for(root)
    cfg.test_evaluator.format_only = True  # test-dev: predictions only
    assert check_coco_annotations(cfg, ('test_dataloader',), ('test_evaluator',)) == [ann, ann]
    with pytest.raises(DataCheckError, match=r"no list \['annotations'\]"):
        check_coco_annotations(cfg)  # the val evaluator needs annotations
    monkeypatch.setenv('MMFISH_SKIP_DATA_CHECKS', '1')
    assert check_coco_annotations(cfg) == []


@pytest.mark.slow
def test_tools_stop_on_bad_data_before_the_runner(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_train.json')
    with open(ann, 'a') as f:
        f.write('garbage')
    work = str(tmp_path / 'work')
    train = run_tool('train.py', TINY_CONFIG, '--work-dir', work, '--cfg-options', *data_opts(root))
    assert train.returncode != 0
    assert 'DataCheckError' in train.stderr and ann in train.stderr
    assert 'Extra data at line 2' in train.stderr
    assert not osp.exists(work)  # nothing was started or written

    os.remove(osp.join(root, 'val', '000002.png'))
    test = run_tool(
        'test.py', TINY_CONFIG, 'no_checkpoint_needed.pth', '--work-dir', work,
        '--cfg-options', *data_opts(root),
    )  # fmt: skip
    assert test.returncode != 0
    assert 'DataCheckError' in test.stderr and '000002.png' in test.stderr
    assert 'instances_val.json' in test.stderr and not osp.exists(work)


def _write_image(path: str, img: np.ndarray) -> None:
    assert cv2.imwrite(path, img)


def _quirky_dataset(src: str, dst: str) -> str:
    """A copy with grayscale and RGBA images, images without objects, and 20x20 images."""
    root = _copy_dataset(src, dst)
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        ann = osp.join(root, 'annotations', f'instances_{split}.json')
        data = _load_json(ann)
        images = data['images']
        gray_path = osp.join(root, split, images[0]['file_name'])
        _write_image(gray_path, cv2.cvtColor(cv2.imread(gray_path), cv2.COLOR_BGR2GRAY))
        rgba_path = osp.join(root, split, images[1]['file_name'])
        _write_image(rgba_path, cv2.cvtColor(cv2.imread(rgba_path), cv2.COLOR_BGR2BGRA))
        next_img = max(i['id'] for i in images) + 1
        next_ann = max(a['id'] for a in data['annotations']) + 1
        # An image without annotations.
        _write_image(osp.join(root, split, 'empty.png'), rng.integers(0, 255, (64, 64, 3), 'u1'))
        images.append(dict(id=next_img, file_name='empty.png', width=64, height=64))
        # A 20x20 image (smaller than FishNet's stride of 32) with one square.
        tiny = rng.integers(0, 255, (20, 20, 3), 'u1')
        tiny[4:14, 4:14] = 255
        _write_image(osp.join(root, split, 'tiny.png'), tiny)
        images.append(dict(id=next_img + 1, file_name='tiny.png', width=20, height=20))
        data['annotations'].append(
            dict(
                id=next_ann,
                image_id=next_img + 1,
                category_id=2,
                bbox=[4, 4, 10, 10],
                area=100,
                iscrowd=0,
                segmentation=[[4, 4, 14, 4, 14, 14, 4, 14]],
            )  # fmt: skip
        )
        _dump_json(data, ann)
    return root


def test_grayscale_and_rgba_load_as_three_channels(tmp_path, tiny_shapes: str) -> None:
    from mmcv.transforms import LoadImageFromFile

    root = _quirky_dataset(tiny_shapes, str(tmp_path / 'q'))
    gray = osp.join(root, 'train', '000000.png')
    rgba = osp.join(root, 'train', '000001.png')
    assert cv2.imread(gray, cv2.IMREAD_UNCHANGED).ndim == 2
    assert cv2.imread(rgba, cv2.IMREAD_UNCHANGED).shape[2] == 4
    load = LoadImageFromFile()  # the configs' default: color_type='color'
    for path in (gray, rgba):
        assert load(dict(img_path=path))['img'].shape == (64, 64, 3)
    # 'unchanged' would keep one or four channels, which the 3-channel normalisation rejects.
    assert LoadImageFromFile(color_type='unchanged')(dict(img_path=gray))['img'].ndim == 2


def test_empty_and_tiny_images_in_datasets(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules()
    root = _quirky_dataset(tiny_shapes, str(tmp_path / 'q'))
    cfg = cfg_for(root)
    check_coco_annotations(cfg)  # valid: nothing to complain about
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    # filter_cfg=dict(filter_empty_gt=True, min_size=32): training drops both extras;
    # evaluation keeps every image.
    names = {osp.basename(d['img_path']) for d in _infos(train)}
    assert len(train) == 24 and not names & {'empty.png', 'tiny.png'}
    assert len(val) == 6
    tiny = val[5]  # Resize scales 20x20 up to 64x64
    assert tiny['data_samples'].img_shape == (64, 64) and tiny['inputs'].shape == (3, 64, 64)


def test_images_smaller_than_the_stride_without_resize(
    cfg_for: Callable, tmp_path, tiny_shapes: str
) -> None:
    """A 20x20 image, not resized: padding to 32 makes it work; without padding, a clear error."""
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    from mmengine.dataset import pseudo_collate

    register_all_modules()
    root = _quirky_dataset(tiny_shapes, str(tmp_path / 'q'))
    cfg = cfg_for(root)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.filter_cfg = None
    ds_cfg.pipeline = [p for p in ds_cfg.pipeline if p['type'] != 'Resize']
    dataset = DATASETS.build(ds_cfg)
    tiny = next(i for i, d in enumerate(_infos(dataset)) if d['img_path'].endswith('tiny.png'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    # Training BN needs more than one value per channel at stride 32: a batch of two.
    batch = model.data_preprocessor(pseudo_collate([dataset[tiny], dataset[tiny]]), True)
    assert batch['inputs'].shape == (2, 3, 32, 32)  # pad_size_divisor=32
    loss, _ = model.parse_losses(model(**batch, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    sample = dataset[tiny]
    sample['data_samples'].set_metainfo(dict(scale_factor=(1.0, 1.0)))  # set by Resize in mmdet
    with torch.no_grad():
        preds = model(**model.data_preprocessor(pseudo_collate([sample])), mode='predict')
        assert preds[0].pred_instances.bboxes.shape[1] == 4
        model.data_preprocessor.pad_size_divisor = 1
        with pytest.raises(ValueError, match='multiples of 32, got 20x20.*pad_size_divisor=32'):
            model(**model.data_preprocessor(pseudo_collate([sample])), mode='predict')


@pytest.mark.slow
def test_quirky_but_valid_data_trains_and_evaluates(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    root = _quirky_dataset(tiny_shapes, str(tmp_path / 'q'))
    work = str(tmp_path / 'work')
    proc = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--cfg-options', *data_opts(root),
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    )  # fmt: skip
    assert proc.returncode == 0, _output(proc)[-3000:]
    metrics = _metrics(work)
    assert 'coco/bbox_mAP' in metrics and 'coco/segm_mAP' in metrics
