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

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmfish  # noqa: F401
from mmfish.datasets import generate_shapes_coco
from mmfish.utils.amp import configure_amp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_fishnet99_fpn_shapes_cpu.py')
TARGETS = {'coco/bbox_mAP_50': 0.5, 'coco/segm_mAP_50': 0.4}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo', help='logs, checkpoints, pictures')
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision: fp16 on a GPU, bf16 on a CPU'
    )
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings')
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
    summary = dict(
        wall_time_s=round(time.time() - start, 1),
        device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu',
        optim_wrapper=cfg.optim_wrapper.type,
        metrics=metrics,
        targets=TARGETS,
        targets_met=all(metrics.get(k, 0.0) >= v for k, v in TARGETS.items()),
        checkpoint=osp.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth'),
        pictures=f'{len(pictures)} images in ' + osp.join(runner.log_dir, 'vis_data', 'vis_image'),
    )
    with open(osp.join(cfg.work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print('demo summary:\n' + json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
