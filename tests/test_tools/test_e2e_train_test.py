"""End to end: tools/train.py trains on generated data, tools/test.py evaluates the result: the
detection demo's config on COCO instances, the tiny segmentation config on label maps."""

import glob
import json
import os.path as osp
import pickle
import subprocess
from typing import Callable

import cv2
import pytest
import torch

from mmfish.datasets import generate_shapes_coco
from mmfish.testing import ROOT, TINY_SEG_CONFIG, data_options, seg_data_options

DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_fishnet99_fpn_shapes_cpu.py')


BATCH_OPTIONS = [f'{loader}_dataloader.batch_size=2' for loader in ('train', 'val', 'test')]


@pytest.mark.slow
def test_train_then_test_on_generated_coco(tmp_path, run_tool: Callable):
    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        out = run_tool(script, *args, cwd=str(tmp_path), timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out

    data_root = str(tmp_path / 'shapes')
    generate_shapes_coco(data_root, num_train=4, num_val=2, image_size=128, seed=1)
    work_dir = str(tmp_path / 'work')
    options = data_options(data_root) + BATCH_OPTIONS

    train = run(
        'train.py', DEMO_CONFIG, '--work-dir', work_dir,
        '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', *options,
    )  # fmt: skip
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)
    assert 'bbox_mAP_copypaste' in train.stdout + train.stderr
    # torch's default weights_only=True load works on what training wrote
    state = torch.load(checkpoint)
    assert any(k.startswith('backbone.head.') for k in state['state_dict'])
    # COCO metrics were logged by the evaluation at the end of the epoch
    scalars = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    logged = [json.loads(line) for path in scalars for line in open(path)]
    assert any('coco/bbox_mAP' in entry and 'coco/segm_mAP' in entry for entry in logged)

    results = str(tmp_path / 'results.pkl')
    test = run(
        'test.py', DEMO_CONFIG, checkpoint,
        '--work-dir', str(tmp_path / 'test_work'), '--out', results, '--show-dir', 'shown',
        '--cfg-options', *options,
    )  # fmt: skip
    log = test.stdout + test.stderr
    assert 'bbox_mAP_copypaste' in log and 'segm_mAP_copypaste' in log
    with open(results, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 2 and 'pred_instances' in predictions[0]
    shown = glob.glob(str(tmp_path / 'test_work' / '*' / 'shown' / '*.png'))
    assert len(shown) == 2


# ----------------------------------------------------------------------------- segmentation
@pytest.mark.slow
def test_tiny_train_then_test_on_generated_label_maps(
    seg_shapes: str, tmp_path, run_tool: Callable
):
    pytest.importorskip('mmseg')
    work_dir = tmp_path / 'work'
    options = seg_data_options(seg_shapes)
    train = run_tool(
        'train.py', TINY_SEG_CONFIG, '--work-dir', str(work_dir), '--cfg-options', *options
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    checkpoint = work_dir / 'iter_6.pth'
    assert checkpoint.is_file()
    log = train.stdout + train.stderr
    assert 'mIoU' in log and 'per class results' in log
    state = torch.load(str(checkpoint))  # torch's default weights_only=True
    keys = state['state_dict']
    assert any(k.startswith('backbone.body.') for k in keys)
    assert not any(k.startswith('backbone.head.') for k in keys)  # the body's features only

    results = tmp_path / 'results.pkl'
    test = run_tool(
        'test.py', TINY_SEG_CONFIG, str(checkpoint), '--work-dir', str(tmp_path / 'test_work'),
        '--out', str(results), '--show-dir', str(tmp_path / 'shown'), '--cfg-options', *options,
    )  # fmt: skip
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    assert 'mIoU' in test.stdout + test.stderr
    with open(results, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 4
    assert tuple(predictions[0]['pred_sem_seg']['data'].shape) == (1, 64, 64)
    shown = glob.glob(str(tmp_path / 'shown' / '**' / '*.png'), recursive=True)
    assert len(shown) == 4
    picture = cv2.imread(shown[0])
    assert picture.shape[:2] == (64, 128)  # ground truth beside the prediction
