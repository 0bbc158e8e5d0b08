"""The segmentation demo: Semantic FPN with FishNet-99 learns the shapes label maps on a CPU.

    python tools/demo_seg.py [--work-dir work_dirs/demo_seg] [--cfg-options k=v ...]

Generates ``data/shapes`` when missing (deterministic, 300 + 50 images with their label maps),
trains with ``configs/segmentation/demo/fpn_fishnet99_shapes_cpu.py`` (mmengine's progress log),
evaluates mIoU on the val split with mmseg's ``IoUMetric`` during training (per-class table in
the log) and draws the ground truth (left) beside the prediction (right) for val images into the
work dir. Ends with a summary (training time without the evaluations, the mIoU after each
evaluation), also written to ``<work_dir>/demo_seg_summary.json``.
"""

import argparse
import glob
import json
import os
import os.path as osp
import time
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmfish  # noqa: F401  (registers FishNet in mmseg's MODELS)
from mmfish.datasets import generate_shapes_coco
from mmfish.datasets.seg_checks import check_seg_data
from mmfish.utils.cli import add_debug_argument, run_cli

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'segmentation', 'demo', 'fpn_fishnet99_shapes_cpu.py')
TARGET_MIOU = 0.70
TARGET_TRAIN_S = 600


class EvalTimerHook(Hook):
    """Adds up the time spent in validation, to tell training time from evaluation time."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.eval_s = 0.0
        self._start: Optional[float] = None

    def before_val(self, runner: Runner) -> None:
        self._start = time.perf_counter()

    def after_val(self, runner: Runner) -> None:
        if self._start is not None:
            self.eval_s += time.perf_counter() - self._start
            self._start = None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--work-dir', default='work_dirs/demo_seg', help='logs, checkpoints, pictures'
    )
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings')
    add_debug_argument(parser)
    return parser.parse_args()


def read_evaluations(log_dir: str) -> List[dict]:
    """The ``aAcc`` / ``mIoU`` / ``mAcc`` of every evaluation (in %), with its iteration."""
    evaluations = []
    for path in glob.glob(osp.join(log_dir, 'vis_data', 'scalars.json')):
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if 'mIoU' in entry:
                    evaluations.append(
                        {k: entry[k] for k in ('step', 'aAcc', 'mIoU', 'mAcc') if k in entry}
                    )
    return evaluations


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)  # the config's data_root and the work dir are relative to the repository
    start = time.perf_counter()
    cfg = Config.fromfile(DEMO_CONFIG)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir

    data = generate_shapes_coco(cfg.data_root.rstrip('/'))
    print(f'dataset: {json.dumps(data)}', flush=True)
    check_seg_data(cfg)

    runner = Runner.from_cfg(cfg)
    timer = EvalTimerHook()
    runner.register_hook(timer)
    train_start = time.perf_counter()
    runner.train()
    train_and_eval_s = time.perf_counter() - train_start

    evaluations = read_evaluations(runner.log_dir)
    if not evaluations:
        raise RuntimeError(f'no mIoU was logged under {runner.log_dir}')
    final_miou = evaluations[-1]['mIoU'] / 100  # IoUMetric reports percentages
    train_s = train_and_eval_s - timer.eval_s
    vis_dir = osp.join(runner.log_dir, 'vis_data', 'vis_image')
    pictures = sorted(glob.glob(osp.join(vis_dir, '*.png')))
    summary = dict(
        wall_time_s=round(time.perf_counter() - start, 1),
        train_time_s=round(train_s, 1),
        eval_time_s=round(timer.eval_s, 1),
        iterations=cfg.train_cfg.max_iters,
        learning_curve=evaluations,
        mIoU=round(final_miou, 4),
        targets=dict(mIoU=TARGET_MIOU, train_time_s=TARGET_TRAIN_S),
        targets_met=dict(mIoU=final_miou >= TARGET_MIOU, train_time_s=train_s <= TARGET_TRAIN_S),
        checkpoint=osp.join(cfg.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth'),
        pictures=f'{len(pictures)} images (ground truth left, prediction right) in {vis_dir}',
    )
    with open(osp.join(cfg.work_dir, 'demo_seg_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print('demo summary:\n' + json.dumps(summary, indent=2))


if __name__ == '__main__':
    run_cli(main)
