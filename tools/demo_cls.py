"""The image-level demo: FishNet-99 learns to tell circles, rectangles and triangles on a CPU.

    python tools/demo_cls.py [--work-dir work_dirs/demo_cls] [--cfg-options k=v ...]

Generates ``data/shapes_cls`` when missing (deterministic: 6000 training and 300 held-out 32x32
images, one shape each, 3 balanced classes), trains FishNet-99 with its score head from scratch
through MMPretrain with ``configs/classification/demo/fishnet99_shapes_cpu.py`` (mmengine's
progress log), evaluates top-1 on the held-out split during training, and ends with a summary
(the top-1 after each evaluation beside chance and the target, the times), also written to
``<work_dir>/demo_cls_summary.json``.
"""

import argparse
import glob
import json
import os
import os.path as osp
import time
from typing import List

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmfish  # noqa: F401  (registers FishNet and its head in mmpretrain's MODELS)
from mmfish.datasets.shapes_cls import generate_shapes_cls
from mmfish.utils.cli import add_debug_argument, run_cli
from mmfish.utils.io import write_text_atomically

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'classification', 'demo', 'fishnet99_shapes_cpu.py')
CHANCE_TOP1 = 100 / 3  # balanced classes: any constant answer
TARGET_TOP1 = 60.0
TARGET_WALL_S = 480


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_cls', help='logs and checkpoints')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings')
    add_debug_argument(parser)
    return parser.parse_args()


def read_evaluations(log_dir: str) -> List[dict]:
    """The held-out top-1 (in %) of every evaluation, with its epoch."""
    evaluations = []
    for path in glob.glob(osp.join(log_dir, 'vis_data', 'scalars.json')):
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if 'accuracy/top1' in entry:
                    evaluations.append(dict(epoch=entry['step'], top1=entry['accuracy/top1']))
    return evaluations


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)  # the config's data_root and the work dir are relative to the repository
    start = time.perf_counter()
    cfg = Config.fromfile(DEMO_CONFIG)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir

    data = generate_shapes_cls(
        cfg.data_root.rstrip('/'), cfg.num_train, cfg.num_val, image_size=cfg.image_size
    )
    print(f'dataset: {json.dumps(data["images"])}', flush=True)

    runner = Runner.from_cfg(cfg)
    train_start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - train_start

    evaluations = read_evaluations(runner.log_dir)
    if not evaluations:
        raise RuntimeError(f'no top-1 was logged under {runner.log_dir}')
    top1 = evaluations[-1]['top1']
    wall_s = time.perf_counter() - start
    summary = dict(
        wall_time_s=round(wall_s, 1),
        train_and_eval_time_s=round(train_s, 1),
        epochs=cfg.train_cfg.max_epochs,
        learning_curve=evaluations,
        top1=round(top1, 2),
        chance_top1=round(CHANCE_TOP1, 2),
        targets=dict(top1=TARGET_TOP1, wall_time_s=TARGET_WALL_S),
        targets_met=dict(top1=top1 >= TARGET_TOP1, wall_time_s=wall_s <= TARGET_WALL_S),
        checkpoint=osp.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth'),
    )
    write_text_atomically(
        osp.join(cfg.work_dir, 'demo_cls_summary.json'), json.dumps(summary, indent=2) + '\n'
    )
    print('demo summary:\n' + json.dumps(summary, indent=2))


if __name__ == '__main__':
    run_cli(main)
