"""Export a Faster / Mask R-CNN's network to ONNX in parts and check its detections on images.

The whole detector does not export with torch's exporters (docs/deployment.md says why); its
tensor parts do: the image to the neck's maps and the RPN head's outputs (``dense.onnx``), the box
head (``bbox_head.onnx``) and the mask head (``mask_head.onnx``) on RoI features of a dynamic
count. With ``--images`` the tool then runs each image through the PyTorch detector and through
the same detector with those parts in onnxruntime (mmdet's anchors, box decoding, NMS, RoIAlign
and mask paste in between, with mmcv's ops), and compares their boxes, scores, labels and masks;
outside ``--box-tolerance`` / ``--score-tolerance``, or with a different detection count or
labels, it exits with status 1.

Example::

    # the CPU demo's trained Mask R-CNN, checked on 20 validation images
    python tools/deployment/detector2onnx.py configs/demo/mask_rcnn_fishnet99_fpn_shapes_cpu.py \\
        --checkpoint work_dirs/demo/epoch_4.pth --images data/shapes/val --num-images 20
"""

import argparse
import json
import os.path as osp
import sys
from typing import Optional, Sequence

import torch

from mmfish.deployment.detector import (
    compare_detections,
    export_detector,
    image_files,
    run_with_onnx,
)
from mmfish.deployment.onnx import (
    DEFAULT_OPSET,
    EXPORTERS,
    ExportError,
    load_config,
    quiet_exporter,
    quiet_mmengine,
)
from mmfish.utils.cli import add_debug_argument, run_cli
from mmfish.utils.io import write_text_atomically
from mmfish.utils.paths import checkpoint_exists

EXIT_PARITY = 1


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config', help='a Faster R-CNN or Mask R-CNN config')
    parser.add_argument('--checkpoint', help="the trained detector's checkpoint")
    parser.add_argument(
        '--out-dir', help='where the .onnx files go (default: work_dirs/onnx/<config>_detector)'
    )
    parser.add_argument('--exporter', choices=EXPORTERS, default='dynamo')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--images', help='a folder of images to compare the detections on')
    parser.add_argument('--num-images', type=int, default=10, help='the first N (default: 10)')
    parser.add_argument(
        '--box-tolerance', type=float, default=0.01, help='in pixels (default: %(default)s)'
    )
    parser.add_argument('--score-tolerance', type=float, default=1e-4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0, help='weights without --checkpoint')
    parser.add_argument('--out-json', help='write the export and comparison figures here')
    add_debug_argument(parser)
    return parser.parse_args(argv)


def build_detector(cfg, checkpoint: Optional[str], seed: int, exportable: bool):
    """The detector of ``cfg`` in eval mode; ``exportable``: FishNet NCHW, no checkpointing."""
    from mmdet.apis import init_detector
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import init_default_scope

    cfg = cfg.copy()
    if exportable and cfg.model.backbone.get('type') == 'FishNet':
        cfg.model.backbone.update(channels_last=False, with_cp=False)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    with quiet_mmengine(), quiet_exporter():  # quiet: init_weights' log, mmdet's warnings
        if checkpoint is not None:
            return init_detector(cfg, checkpoint, device='cpu').eval()
        register_all_modules(init_default_scope=False)
        init_default_scope(cfg.get('default_scope', 'mmdet'))  # as init_detector does
        model = MODELS.build(cfg.model)
        model.init_weights()
    model.cfg = cfg  # as init_detector sets it: inference_detector reads the test pipeline
    model.dataset_meta = dict(classes=cfg.get('metainfo', {}).get('classes', ()))
    return model.eval()


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.checkpoint is not None and not checkpoint_exists(args.checkpoint):
        raise ExportError(
            f"checkpoint {args.checkpoint} does not exist: give the trained detector's "
            'checkpoint (e.g. work_dirs/NAME/epoch_12.pth)'
        )
    images = image_files(args.images, args.num_images) if args.images else []
    cfg = load_config(args.config)
    if args.out_dir is None:
        stem = osp.splitext(osp.basename(args.config.split('::')[-1]))[0]
        args.out_dir = osp.join('work_dirs', 'onnx', f'{stem}_detector')
    torch.set_num_threads(args.threads)
    detector = build_detector(cfg, args.checkpoint, args.seed, exportable=True)
    exported = export_detector(detector, args.out_dir, args.exporter, args.opset)
    for part, info in exported.items():
        print(
            f'Exported {part} to {info["path"]} ({args.exporter} exporter, opset {args.opset}, '
            f'{info["size_mib"]:.1f} MiB, {info["export_s"]:.1f} s): outputs '
            f'{", ".join(info["outputs"])}'
        )
    report = dict(
        config=args.config, checkpoint=args.checkpoint, exported=exported,
        torch=torch.__version__, command=' '.join(['python', *sys.argv]),
    )  # fmt: skip
    failed = False
    if images:
        reference = build_detector(cfg, args.checkpoint, args.seed, exportable=False)
        onnx_detector = run_with_onnx(
            detector, {p: i['path'] for p, i in exported.items()}, args.threads
        )
        with quiet_exporter():
            figures = compare_detections(reference, onnx_detector, images)
        report['comparison'] = figures
        mask = (
            '' if figures['mask_iou'] is None else f', smallest mask IoU {figures["mask_iou"]:.4f}'
        )
        print(
            f'{figures["images"]} images of {args.images}, {figures["detections"]} detections '
            f'by PyTorch: {len(figures["mismatched_images"])} images with another count or other '
            f'labels in onnxruntime; largest box difference {figures["box_error_px"]:.2e} px, '
            f'score difference {figures["score_error"]:.2e}{mask}'
        )
        failed = bool(
            figures['mismatched_images']
            or figures['box_error_px'] > args.box_tolerance
            or figures['score_error'] > args.score_tolerance
        )
    if args.out_json:
        write_text_atomically(args.out_json, json.dumps(report, indent=1) + '\n')
    if failed:
        print(
            'detector2onnx.py: parity FAILED: the detections differ beyond the tolerances',
            file=sys.stderr,
        )
        sys.exit(EXIT_PARITY)
    return report


if __name__ == '__main__':
    run_cli(main)
