"""Which FishNet features should feed a segmentation decoder? Train the variants side by side.

    python tools/analysis_tools/seg_feature_choice.py [--iters 150] [--variants body head mix]
        [--seed 0] [--work-dir work_dirs/seg_feature_choice] [--sequential]

Trains the segmentation demo (``configs/segmentation/demo/fpn_fishnet99_shapes_cpu.py``:
Semantic FPN + FishNet-99 from scratch on the shapes label maps) once per feature choice, with
the same seed, data order, iterations and schedule, then evaluates each on the val split
(mmseg's ``IoUMetric``) and prints a table. The variants run at the same time, one process each
with ``OMP_NUM_THREADS`` = cores / variants, so that they share the machine's conditions
(``--sequential`` runs them one after another with all threads instead). Variants:

- ``body``: the body's features at strides 4, 8, 16 (``out_indices=(7, 6, 5)``); the head
  is not built;
- ``head``: the head's features at strides 8, 16, 32 (``(8, 9, 10)``), predicting at stride 8;
- ``mix``: the body's last feature and the head's three, strides 4, 8, 16, 32
  (``(7, 8, 9, 10)``, the detection pyramid).
"""

import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmfish.models import FishNet  # noqa: E402

DEMO_CONFIG = osp.join(ROOT, 'configs', 'segmentation', 'demo', 'fpn_fishnet99_shapes_cpu.py')
VARIANTS: Dict[str, tuple] = {'body': (7, 6, 5), 'head': (8, 9, 10), 'mix': (7, 8, 9, 10)}


def variant_options(out_indices: tuple, width: int = 128) -> List[str]:
    """``--cfg-options`` that feed these FishNet-99 features to the demo's FPN and head."""
    backbone = FishNet(arch='fishnet99', out_indices=out_indices)
    n = len(out_indices)

    def seq(values) -> str:
        return '[' + ','.join(str(v) for v in values) + ']'

    return [
        f'model.backbone.out_indices={seq(out_indices)}',
        f'model.neck.in_channels={seq(backbone.out_channels)}',
        f'model.neck.num_outs={n}',
        f'model.decode_head.in_channels={seq([width] * n)}',
        f'model.decode_head.in_index={seq(range(n))}',
        f'model.decode_head.feature_strides={seq(backbone.out_strides)}',
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--iters', type=int, default=150, help='training iterations per variant')
    parser.add_argument(
        '--val-interval',
        type=int,
        default=None,
        help='evaluate every N iterations (default: at the end)',
    )
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--seed', type=int, default=0, help='one seed for all variants')
    parser.add_argument('--work-dir', default='work_dirs/seg_feature_choice')
    parser.add_argument('--sequential', action='store_true', help='one variant at a time')
    return parser.parse_args()


def read_run(work_dir: str) -> dict:
    """Final val metrics and median train-iteration time of one run, from its scalars.json."""
    entries = []
    for path in glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            entries += [json.loads(line) for line in f]
    evals = [e for e in entries if 'mIoU' in e]
    times = [e['time'] for e in entries if 'time' in e and 'mIoU' not in e]
    if not evals:
        raise RuntimeError(f'no mIoU logged in {work_dir}')
    return dict(
        aAcc=evals[-1]['aAcc'],
        mIoU=evals[-1]['mIoU'],
        mAcc=evals[-1]['mAcc'],
        curve={e['step']: e['mIoU'] for e in evals},
        s_per_iter=round(statistics.median(times), 3) if times else None,
    )


def main() -> None:
    args = parse_args()
    os.chdir(ROOT)
    from mmfish.datasets import generate_shapes_coco

    generate_shapes_coco('data/shapes')
    cores = os.cpu_count() or 1
    threads = str(cores if args.sequential else max(1, cores // len(args.variants)))
    env = {**os.environ, 'OMP_NUM_THREADS': threads, 'MKL_NUM_THREADS': threads}
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    common = [
        f'train_cfg.max_iters={args.iters}',
        f'train_cfg.val_interval={args.val_interval or args.iters}',
        f'param_scheduler.1.end={args.iters}',
        f'default_hooks.checkpoint.interval={args.iters}',
        'default_hooks.visualization.draw=False',
        f'randomness.seed={args.seed}',
    ]
    runs, started = {}, {}
    for name in args.variants:
        work_dir = osp.join(args.work_dir, name)
        cmd = [
            sys.executable, osp.join(ROOT, 'tools', 'train.py'), DEMO_CONFIG,
            '--work-dir', work_dir, '--cfg-options', *common, *variant_options(VARIANTS[name]),
        ]  # fmt: skip
        os.makedirs(work_dir, exist_ok=True)
        log = open(osp.join(work_dir, 'stdout.log'), 'w')
        started[name] = time.perf_counter()
        runs[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        if args.sequential:
            runs[name][0].wait()
    walls = {}
    for name, (proc, log) in runs.items():
        if proc.wait() != 0:
            raise RuntimeError(f'{name} failed: see {log.name}')
        walls[name] = round(time.perf_counter() - started[name], 1)
        log.close()

    print(
        f'\nFeature choice, {args.iters} iterations each (batch 4, seed {args.seed}), '
        f'{"sequential" if args.sequential else "concurrent"}, OMP_NUM_THREADS={threads}:\n'
    )
    print(
        '| variant | out_indices | channels | strides | val mIoU (by iteration) | mAcc | aAcc '
        '| s/iter | wall s |'
    )
    print('|---|---|---|---|---|---|---|---|---|')
    results = {}
    for name in args.variants:
        backbone = FishNet(arch='fishnet99', out_indices=VARIANTS[name])
        r = read_run(osp.join(args.work_dir, name))
        results[name] = dict(r, wall_s=walls[name], out_indices=VARIANTS[name])
        curve = ', '.join(f'{v:.2f} ({k})' for k, v in r['curve'].items())
        print(
            f'| {name} | {VARIANTS[name]} | {backbone.out_channels} | {backbone.out_strides} | '
            f'{curve} | {r["mAcc"]:.2f} | {r["aAcc"]:.2f} | {r["s_per_iter"]} | '
            f'{walls[name]} |'
        )
    with open(osp.join(args.work_dir, 'feature_choice.json'), 'w') as f:
        json.dump(
            dict(iters=args.iters, seed=args.seed, threads=threads, results=results), f, indent=2
        )


if __name__ == '__main__':
    main()
