"""A Mask R-CNN with its network in onnxruntime (mmfish/deployment/detector.py,
tools/deployment/detector2onnx.py): the same detections as PyTorch on the tiny shapes images.

The TorchScript exporter keeps these tests fast; the dynamo exporter, the tool's default, is the
one docs/deployment.md measures on the demo's trained detector.
"""

import os
import sys

import onnx
import pytest
import torch

from mmfish.deployment.detector import compare_detections, export_detector, run_with_onnx
from mmfish.deployment.onnx import ExportError, load_config
from mmfish.testing import TINY_CONFIG, import_tool


@pytest.fixture(scope='module')
def detector2onnx():
    return import_tool('deployment', 'detector2onnx')


@pytest.fixture(scope='module')
def val_images(tiny_shapes):
    folder = os.path.join(tiny_shapes, 'val')
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def test_detector_with_onnx_parts_detects_as_pytorch(
    detector2onnx, val_images, one_thread, tmp_path
):
    cfg = load_config(TINY_CONFIG)  # score_thr 0: up to 10 detections on every image
    detector = detector2onnx.build_detector(cfg, None, seed=0, exportable=True)
    exported = export_detector(detector, str(tmp_path), exporter='torchscript')
    assert sorted(os.listdir(tmp_path)) == ['bbox_head.onnx', 'dense.onnx', 'mask_head.onnx']
    roi_input = onnx.load(exported['bbox_head']['path']).graph.input[0].type.tensor_type
    assert roi_input.shape.dim[0].dim_param  # a dynamic number of RoIs
    reference = detector2onnx.build_detector(cfg, None, seed=0, exportable=False)
    onnx_detector = run_with_onnx(detector, {p: e['path'] for p, e in exported.items()})
    figures = compare_detections(reference, onnx_detector, val_images)
    assert figures['images'] == len(val_images) == 4 and figures['detections'] == 40
    assert figures['mismatched_images'] == []
    assert figures['box_error_px'] < 1e-3 and figures['score_error'] < 1e-5
    assert figures['mask_iou'] == pytest.approx(1.0, abs=1e-3)
    # Against a detector with other weights the comparison fails: it can tell.
    other = detector2onnx.build_detector(cfg, None, seed=1, exportable=False)
    differ = compare_detections(other, onnx_detector, val_images[:1])
    assert differ['mismatched_images'] or differ['score_error'] > 1e-3


@pytest.mark.parametrize(
    'args, message',
    [
        (['--checkpoint', 'no/such.pth'], 'checkpoint no/such.pth does not exist: give the '
         "trained detector's checkpoint (e.g. work_dirs/NAME/epoch_12.pth)"),
        (['--images', 'no/such/folder'], '--images no/such/folder is not a folder: give a '
         'folder of .png or .jpg images'),
    ],
    ids=['checkpoint', 'images'],
)  # fmt: skip
def test_detector_tool_refuses_bad_input_in_one_line(
    args, message, detector2onnx, monkeypatch, capsys, tmp_path
):
    from mmfish.utils.cli import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['detector2onnx.py', TINY_CONFIG, *args])
    with pytest.raises(SystemExit) as exit_:
        run_cli(detector2onnx.main)
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [
        f'detector2onnx.py: error: ExportError: {message} (traceback: rerun with --debug or '
        'MMFISH_DEBUG=1)'
    ]
    assert os.listdir(tmp_path) == []


def test_a_one_stage_detector_is_refused():
    from mmfish.deployment.detector import check_detector

    detector = torch.nn.Module()
    detector.neck = torch.nn.Identity()
    with pytest.raises(ExportError, match=r'has no rpn_head, roi_head.bbox_head: the detector'):
        check_detector(detector)


def test_faster_rcnn_exports_without_a_mask_head(detector2onnx, val_images, one_thread, tmp_path):
    cfg = load_config(TINY_CONFIG)
    cfg.model.roi_head.mask_head = None
    cfg.model.roi_head.mask_roi_extractor = None
    detector = detector2onnx.build_detector(cfg, None, seed=0, exportable=True)
    exported = export_detector(detector, str(tmp_path), exporter='torchscript')
    assert sorted(exported) == ['bbox_head', 'dense']
    reference = detector2onnx.build_detector(cfg, None, seed=0, exportable=False)
    onnx_detector = run_with_onnx(detector, {p: e['path'] for p, e in exported.items()})
    figures = compare_detections(reference, onnx_detector, val_images[:2])
    assert figures['detections'] == 20 and figures['mismatched_images'] == []
    assert figures['box_error_px'] < 1e-3 and figures['mask_iou'] is None
