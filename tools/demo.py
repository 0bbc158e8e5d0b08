"""The embedded default: Mask R-CNN with FishNet-99 learns the generated shapes set on a CPU.

    python tools/demo.py [--work-dir work_dirs/demo] [--amp] [--cfg-options k=v ...]

Generates ``data/shapes`` when missing (deterministic, about 300 + 50 images), trains with
``configs/demo/mask_rcnn_fishnet99_fpn_shapes_cpu.py`` (mmengine's progress log), evaluates on
the val split with pycocotools (the COCO AP tables are printed) and draws predictions on val
images into the work dir. Ends with a summary, also written to ``<work_dir>/demo_summary.json``.
It runs on the GPU when torch sees one (mmengine's default), else on the CPU; ``--amp`` is mixed
precision as in ``tools/train.py``: fp16 with dynamic loss scaling on a GPU, bf16 in the backbone
and neck on a CPU.
"""

import argparse
import glob
import json
import os
import os.path as osp
import time
from typing import Dict, List, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmfish  # noqa: F401
from mmfish.datasets import generate_shapes_coco
from mmfish.engine.optimizers.amp import configure_amp
from mmfish.utils.cli import add_debug_argument, run_cli

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_fishnet99_fpn_shapes_cpu.py')
TARGETS = {'coco/bbox_mAP_50': 0.5, 'coco/segm_mAP_50': 0.4}


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two COCO boxes (x, y, w, h)."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def drawn_box_quality(
    gt_file: str, pred_file: str, score_thr: float, iou_thr: float = 0.5
) -> Dict[str, float]:
    """How many of the boxes drawn at ``score_thr`` are real objects.

    Each prediction at or above the threshold is matched, highest score first, to an unmatched
    ground-truth box of its class with IoU >= ``iou_thr``. Returns the number drawn, the
    fraction of them that matched (precision) and the fraction of ground truth found (recall).
    """
    with open(gt_file) as f:
        gt = json.load(f)
    with open(pred_file) as f:
        preds = [p for p in json.load(f) if p['score'] >= score_thr]
    by_image: Dict[int, List[dict]] = {}
    for ann in gt['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    matched_gt = set()
    hits = 0
    for pred in sorted(preds, key=lambda p: -p['score']):
        best, best_iou = None, iou_thr
        for ann in by_image.get(pred['image_id'], []):
            if ann['id'] in matched_gt or ann['category_id'] != pred['category_id']:
                continue
            iou = _iou(pred['bbox'], ann['bbox'])
            if iou >= best_iou:
                best, best_iou = ann['id'], iou
        if best is not None:
            matched_gt.add(best)
            hits += 1
    return dict(
        score_thr=score_thr,
        drawn=len(preds),
        precision=round(hits / len(preds), 4) if preds else 0.0,
        recall=round(len(matched_gt) / max(1, len(gt['annotations'])), 4),
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo', help='logs, checkpoints, pictures')
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision: fp16 on a GPU, bf16 on a CPU'
    )
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings')
    add_debug_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)  # the config's data_root and the work dir are relative to the repository
    start = time.time()
    cfg = Config.fromfile(DEMO_CONFIG)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.amp:
        configure_amp(cfg)
    cfg.work_dir = args.work_dir

    data = generate_shapes_coco(cfg.data_root.rstrip('/'))
    print(f'dataset: {json.dumps(data)}', flush=True)

    # The evaluator also writes its predictions, to measure the pictures' boxes against.
    preds_prefix = osp.join(cfg.work_dir, 'val_predictions')
    cfg.val_evaluator.outfile_prefix = preds_prefix
    runner = Runner.from_cfg(cfg)
    runner.train()

    scalars = runner.message_hub.log_scalars
    # the last evaluation's metrics, as RuntimeInfoHook records them ('val/coco/...')
    metrics = {
        key: round(float(scalars[f'val/{key}'].current()), 4)
        for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50')
        if f'val/{key}' in scalars
    }
    if not metrics:
        raise RuntimeError(f'no COCO metrics were logged; scalars: {sorted(scalars)}')
    pictures = sorted(glob.glob(osp.join(runner.log_dir, 'vis_data', 'vis_image', '*.png')))
    score_thr = cfg.default_hooks.visualization.get('score_thr', 0.3)
    summary = dict(
        wall_time_s=round(time.time() - start, 1),
        device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu',
        optim_wrapper=cfg.optim_wrapper.type,
        metrics=metrics,
        pictures_boxes=drawn_box_quality(
            cfg.val_evaluator.ann_file, preds_prefix + '.bbox.json', score_thr
        ),
        targets=TARGETS,
        targets_met=all(metrics.get(k, 0.0) >= v for k, v in TARGETS.items()),
        checkpoint=osp.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth'),
        pictures=f'{len(pictures)} images in ' + osp.join(runner.log_dir, 'vis_data', 'vis_image'),
    )
    with open(osp.join(cfg.work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print('demo summary:\n' + json.dumps(summary, indent=2))


if __name__ == '__main__':
    run_cli(main)
