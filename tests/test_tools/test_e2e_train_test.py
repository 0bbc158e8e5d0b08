"""End to end: tools/train.py trains on generated COCO data, tools/test.py evaluates the result."""

import glob
import json
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch

from mmfish.datasets import generate_shapes_coco

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_fishnet99_fpn_shapes_cpu.py')


def data_options(data_root: str) -> list:
    ann_val = osp.join(data_root, 'annotations', 'instances_val.json')
    return [
        f'train_dataloader.dataset.data_root={data_root}/',
        f'val_dataloader.dataset.data_root={data_root}/',
        f'test_dataloader.dataset.data_root={data_root}/',
        f'val_evaluator.ann_file={ann_val}',
        f'test_evaluator.ann_file={ann_val}',
        'train_dataloader.batch_size=2',
        'val_dataloader.batch_size=2',
        'test_dataloader.batch_size=2',
    ]


def run(args: list, cwd: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_train_then_test_on_generated_coco(tmp_path):
    data_root = str(tmp_path / 'shapes')
    generate_shapes_coco(data_root, num_train=4, num_val=2, image_size=128, seed=1)
    work_dir = str(tmp_path / 'work')
    options = data_options(data_root)

    train = run(
        [
            osp.join(ROOT, 'tools', 'train.py'), DEMO_CONFIG, '--work-dir', work_dir,
            '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', *options,
        ],
        cwd=str(tmp_path),
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
        [
            osp.join(ROOT, 'tools', 'test.py'), DEMO_CONFIG, checkpoint,
            '--work-dir', str(tmp_path / 'test_work'), '--out', results, '--show-dir', 'shown',
            '--cfg-options', *options,
        ],
        cwd=str(tmp_path),
    )  # fmt: skip
    log = test.stdout + test.stderr
    assert 'bbox_mAP_copypaste' in log and 'segm_mAP_copypaste' in log
    with open(results, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 2 and 'pred_instances' in predictions[0]
    shown = glob.glob(str(tmp_path / 'test_work' / '*' / 'shown' / '*.png'))
    assert len(shown) == 2
