"""A two-stage detector (Faster / Mask R-CNN) with its network in onnxruntime and mmdet's own
post-processing in Python: the export that works where the whole detector does not.

The whole detector does not export with torch's exporters on this stack (mmdet's data-dependent
branches, mmcv's NMS and RoIAlign; docs/deployment.md names each blocker). Every tensor part of
it does: :func:`export_detector` writes three ONNX files, each with its own dynamic dimensions:

- ``dense.onnx``: the image batch (``N x 3 x H x W``, H and W multiples of 32, normalised and
  padded as the data preprocessor does) to the neck's maps and the RPN head's class scores and
  box deltas at every level;
- ``bbox_head.onnx``: the RoI features of a dynamic number of boxes to the box head's class
  scores and box deltas;
- ``mask_head.onnx`` (Mask R-CNN): the mask RoI features to the mask logits.

:func:`run_with_onnx` makes a detector call those files in place of its modules, so that
``inference_detector`` runs mmdet's anchors, box decoding, NMS, RoIAlign and mask paste (with
mmcv's ops) on onnxruntime's tensors; :func:`compare_detections` holds its boxes, scores, labels
and masks against the PyTorch detector's on the same images.
"""

import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .onnx import (
    DEFAULT_OPSET,
    INPUT_NAME,
    TRACE_BATCH,
    TRACE_SIDE,
    ExportError,
    export_module,
    image_dims,
    session,
)

PARTS = ('dense', 'bbox_head', 'mask_head')
#: RoIs in the traced batch of the RoI heads (then dynamic: 1 to MAX_ROIS).
TRACE_ROIS, MAX_ROIS = 8, 100_000


class DenseNetwork(nn.Module):
    """Image batch -> the neck's maps, then the RPN head's class scores and box deltas."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.neck = detector.neck
        self.rpn_head = detector.rpn_head

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        maps = self.neck(self.backbone(x))
        scores, deltas = self.rpn_head(maps)
        return (*maps, *scores, *deltas)


class RoIHead(nn.Module):
    """A box or mask head on a batch of RoI features, its outputs as a tuple."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = self.head(x)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def check_detector(detector: nn.Module) -> None:
    """Refuse a detector that is not a two-stage one with a neck and a standard RoI head."""
    missing = [
        name
        for name, found in (
            ('neck', getattr(detector, 'neck', None)),
            ('rpn_head', getattr(detector, 'rpn_head', None)),
            ('roi_head.bbox_head', getattr(getattr(detector, 'roi_head', None), 'bbox_head', None)),
        )
        if found is None
    ]
    if missing:
        raise ExportError(
            f'{type(detector).__name__} has no {", ".join(missing)}: the detector export takes a '
            'two-stage detector with a neck (Faster R-CNN, Mask R-CNN); export the backbone and '
            'neck with tools/deployment/pytorch2onnx.py'
        )
    if detector.roi_head.bbox_head.__class__.__name__.startswith('Cascade') or isinstance(
        detector.roi_head.bbox_head, nn.ModuleList
    ):
        raise ExportError('a cascade RoI head (several box heads) is not supported')


def roi_channels(detector: nn.Module, extractor: str) -> Tuple[int, int]:
    """(channels, side) of the RoI features that ``roi_head.<extractor>`` gives its head."""
    roi_extractor = getattr(detector.roi_head, extractor)
    size = roi_extractor.roi_layers[0].output_size
    side = size[0] if isinstance(size, (tuple, list)) else size
    return roi_extractor.out_channels, int(side)


def part_modules(detector: nn.Module) -> Dict[str, Tuple[nn.Module, torch.Tensor, dict, list]]:
    """Each part to export: (module, traced input, dynamic dimensions, output names)."""
    from torch.export import Dim

    levels = detector.neck.num_outs
    names = (
        [f'neck_{i}' for i in range(levels)]
        + [f'rpn_scores_{i}' for i in range(levels)]
        + [f'rpn_deltas_{i}' for i in range(levels)]
    )
    image = torch.randn(TRACE_BATCH, 3, TRACE_SIDE, TRACE_SIDE)
    rois = {0: Dim('rois', min=1, max=MAX_ROIS)}
    parts = {'dense': (DenseNetwork(detector), image, image_dims(), names)}
    channels, side = roi_channels(detector, 'bbox_roi_extractor')
    parts['bbox_head'] = (
        RoIHead(detector.roi_head.bbox_head),
        torch.randn(TRACE_ROIS, channels, side, side),
        rois,
        ['cls_score', 'bbox_pred'],
    )
    if getattr(detector.roi_head, 'mask_head', None) is not None:
        channels, side = roi_channels(detector, 'mask_roi_extractor')
        parts['mask_head'] = (
            RoIHead(detector.roi_head.mask_head),
            torch.randn(TRACE_ROIS, channels, side, side),
            rois,
            ['mask_logits'],
        )
    return parts


def export_detector(
    detector: nn.Module, out_dir: str, exporter: str = 'dynamo', opset: int = DEFAULT_OPSET
) -> Dict[str, dict]:
    """Write ``<out_dir>/<part>.onnx`` for each part of ``detector`` (eval mode, FishNet built
    with ``channels_last=False``); returns each part's export figures, with its ``path``."""
    check_detector(detector)
    detector.eval()
    results = {}
    for part, (module, sample, dims, names) in part_modules(detector).items():
        path = osp.join(out_dir, f'{part}.onnx')
        results[part] = dict(
            path=path, **export_module(module, path, sample, names, dims, exporter, opset)
        )
    return results


def run_with_onnx(detector: nn.Module, paths: Dict[str, str], threads: int = 0) -> nn.Module:
    """Make ``detector`` (changed in place, and returned) run its parts in onnxruntime.

    Its ``extract_feat``, ``rpn_head.forward``, ``roi_head.bbox_head.forward`` and
    ``roi_head.mask_head.forward`` are replaced by calls to the ONNX files; everything between
    them stays mmdet's code.
    """
    sessions = {part: session(path, threads) for part, path in paths.items()}
    levels = detector.neck.num_outs
    last: Dict[str, object] = {}

    def run(part: str, x: torch.Tensor) -> List[torch.Tensor]:
        outputs = sessions[part].run(None, {INPUT_NAME: x.detach().float().cpu().numpy()})
        return [torch.from_numpy(o) for o in outputs]

    def extract_feat(batch_inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = run('dense', batch_inputs)
        maps = tuple(outputs[:levels])
        last['maps'], last['rpn'] = maps, (outputs[levels : 2 * levels], outputs[2 * levels :])
        return maps

    def rpn_forward(maps: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        if last.get('maps') is None or maps[0] is not last['maps'][0]:
            raise RuntimeError('the RPN head runs on the maps of the last extract_feat only')
        return last['rpn']

    detector.extract_feat = extract_feat
    detector.rpn_head.forward = rpn_forward
    detector.roi_head.bbox_head.forward = lambda x: tuple(run('bbox_head', x))
    if 'mask_head' in sessions:
        detector.roi_head.mask_head.forward = lambda x: run('mask_head', x)[0]
    return detector


def compare_detections(
    reference: nn.Module, onnx_detector: nn.Module, images: Sequence[str]
) -> dict:
    """Both detectors' predictions on each image (``inference_detector``), compared.

    Returns:
        ``images``, ``detections`` (the reference's, all images), ``mismatched_images`` (a
        different count or other labels, in order), and over the matched images the largest
        ``box_error_px`` and ``score_error`` and the smallest ``mask_iou``.
    """
    from mmdet.apis import inference_detector

    figures = dict(
        images=len(images), detections=0, mismatched_images=[], box_error_px=0.0,
        score_error=0.0, mask_iou=None,
    )  # fmt: skip
    for path in images:
        want = inference_detector(reference, path).pred_instances
        got = inference_detector(onnx_detector, path).pred_instances
        figures['detections'] += len(want)
        if len(want) != len(got) or not torch.equal(want.labels, got.labels):
            figures['mismatched_images'].append(path)
            continue
        if not len(want):
            continue
        box = float((want.bboxes - got.bboxes).abs().max())
        score = float((want.scores - got.scores).abs().max())
        figures['box_error_px'] = max(figures['box_error_px'], box)
        figures['score_error'] = max(figures['score_error'], score)
        if 'masks' in want:
            inter = (want.masks & got.masks).flatten(1).sum(1).float()
            union = (want.masks | got.masks).flatten(1).sum(1).clamp(min=1).float()
            iou = float((inter / union).min())
            figures['mask_iou'] = (
                iou if figures['mask_iou'] is None else min(figures['mask_iou'], iou)
            )
    return figures


def image_files(folder: str, limit: Optional[int] = None) -> List[str]:
    """The ``.png`` / ``.jpg`` files of ``folder``, sorted, the first ``limit``."""
    import glob

    if not osp.isdir(folder):
        raise ExportError(
            f'--images {folder} is not a folder: give a folder of .png or .jpg images'
        )
    files = sorted(
        f for ext in ('png', 'jpg', 'jpeg') for f in glob.glob(osp.join(folder, f'*.{ext}'))
    )
    if not files:
        raise ExportError(f'--images {folder} holds no .png or .jpg image')
    return files[:limit]


__all__ = [
    'PARTS',
    'DenseNetwork',
    'RoIHead',
    'check_detector',
    'compare_detections',
    'export_detector',
    'image_files',
    'part_modules',
    'run_with_onnx',
]
