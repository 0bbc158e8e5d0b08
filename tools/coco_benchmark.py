"""Train and test the paper's COCO comparison: FishNet configs and mmdet's R-50 baselines.

    python tools/coco_benchmark.py [--launcher dist|slurm|none] [--gpus N] [--partition P]
        [--work-root work_dirs/coco_benchmark] [--configs NAME ...] [--dry-run]
        [--train-args "..."] [--test-args "..."] [--cfg-options k=v ...]

For each config, in turn:

1. train into ``WORK_ROOT/<config name>/`` with ``tools/dist_train.sh`` (this machine,
   torchrun, GPUS processes), ``tools/slurm_train.sh`` (``srun`` on PARTITION, GPUS tasks) or,
   with ``--launcher none``, one plain ``tools/train.py`` process;
2. test its last checkpoint (``epoch_12.pth`` for the 1x schedule: the config's
   ``train_cfg.max_epochs``, or ``iter_<max_iters>.pth``) with ``tools/dist_test.sh`` /
   ``tools/slurm_test.sh`` / ``tools/test.py`` into ``WORK_ROOT/<config name>/test/``.

Then ``tools/analysis_tools/collect_results.py`` writes ``WORK_ROOT/results.md`` and
``WORK_ROOT/results.json`` from every work dir (AP, parameters, FLOPs, seconds per iteration,
FishNet against R-50 beside the paper).

Resumable: a run whose last checkpoint exists is not trained again and a run with a COCO test
output is not tested again, so the same command continues an interrupted benchmark; an
unfinished training continues from its latest checkpoint (``train.py --resume``). A failed
command is reported and the other configs still run; the exit status is then 1.
``--dry-run`` prints the commands (with the skips) and runs nothing.

Configs (``--configs`` takes these names, or paths of other configs):
  faster_rcnn_r50_fpn_1x_coco        configs/baselines/: mmdet's Faster R-CNN R-50-FPN 1x
  faster_rcnn_fishnet{99,150,201}_fpn_1x_coco
  mask_rcnn_r50_fpn_1x_coco          configs/baselines/: mmdet's Mask R-CNN R-50-FPN 1x
  mask_rcnn_fishnet{99,150,201}_fpn_1x_coco
The default set is those that can start: a FishNet config whose variant has no published
ImageNet file that the converter reads is left out (listed below, with why; ``--dry-run`` and a
run print that line too). Named in ``--configs``, such a config runs, with a warning: it needs
its ``checkpoints/`` file converted from weights of your own.

Run it from the repository root: the configs read ``data/coco/`` and
``checkpoints/fishnet*_in1k_mmfish.pth`` relative to the working directory (docs/weights.md).
The configs' batch is 16 images (8 GPUs x 2); on another number of GPUs add
``--train-args=--auto-scale-lr``.

Environment: GPUS and PARTITION are the defaults of ``--gpus`` and ``--partition``; PYTHON is
the interpreter the scripts run (default: the one running this); the scripts also read NNODES,
NODE_RANK, MASTER_ADDR, PORT (dist) and GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS (slurm).
``slurm_*.sh`` split their extra arguments on spaces: keep ``--cfg-options`` values free of
spaces there.
"""

import argparse
import glob
import json
import os
import os.path as osp
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

# The variants without published ImageNet weights that the converter reads, and why.
from mmfish.models.backbones.variants import NO_PUBLISHED_WEIGHTS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(ROOT, 'tools')
COLLECT = osp.join(TOOLS, 'analysis_tools', 'collect_results.py')
BENCHMARK_CONFIGS = (
    'configs/baselines/faster_rcnn_r50_fpn_1x_coco.py',
    'configs/faster_rcnn_fishnet99_fpn_1x_coco.py',
    'configs/faster_rcnn_fishnet150_fpn_1x_coco.py',
    'configs/faster_rcnn_fishnet201_fpn_1x_coco.py',
    'configs/baselines/mask_rcnn_r50_fpn_1x_coco.py',
    'configs/mask_rcnn_fishnet99_fpn_1x_coco.py',
    'configs/mask_rcnn_fishnet150_fpn_1x_coco.py',
    'configs/mask_rcnn_fishnet201_fpn_1x_coco.py',
)
LAUNCHERS = ('dist', 'slurm', 'none')
VARIANT_RE = re.compile(r'fish(?:net|next)\d+')
Command = Tuple[Dict[str, str], List[str]]  # (environment variables set, argv)


@dataclass
class Run:
    """One config of the benchmark and where its results go."""

    name: str
    config: str
    work_dir: str
    last_checkpoint: str

    @property
    def test_dir(self) -> str:
        return osp.join(self.work_dir, 'test')


def config_name(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


def start_problem(config: str) -> Optional[str]:
    """Why a benchmark config cannot start from published ImageNet weights (None: it can).

    The variant is the one in the config's name (``tests/test_tools/test_coco_benchmark.py``
    checks it is the config's backbone arch).
    """
    if config not in BENCHMARK_CONFIGS:
        return None
    variant = VARIANT_RE.search(config_name(config))
    if variant is None or variant.group(0) not in NO_PUBLISHED_WEIGHTS:
        return None
    # The table's first clause: what is missing (the rest says what to do instead).
    return NO_PUBLISHED_WEIGHTS[variant.group(0)].split(':')[0]


DEFAULT_CONFIGS = tuple(c for c in BENCHMARK_CONFIGS if start_problem(c) is None)
LEFT_OUT = {config_name(c): start_problem(c) for c in BENCHMARK_CONFIGS if start_problem(c)}


def left_out_note() -> str:
    """The line naming the benchmark configs that the default set leaves out, and why."""
    why: Dict[str, List[str]] = {}
    for name, problem in LEFT_OUT.items():
        why.setdefault(problem, []).append(name)
    return '; '.join(f'{", ".join(names)} ({problem})' for problem, names in why.items())


def resolve_config(name: str) -> str:
    """A benchmark config's path from its name (or a path, kept as it is).

    Raises:
        ValueError: neither a benchmark config name nor an existing file.
    """
    known = {config_name(c): osp.join(ROOT, c) for c in BENCHMARK_CONFIGS}
    if config_name(name) in known and not osp.isfile(name):
        return osp.relpath(known[config_name(name)])
    if osp.isfile(name):
        return name
    raise ValueError(
        f'--configs {name!r}: not a benchmark config nor a file; the benchmark configs are '
        f'{sorted(known)}'
    )


def parse_cfg_options(options: Sequence[str]) -> dict:
    """``k=v`` strings as mmengine's ``--cfg-options`` parses them."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--options', nargs='+', action=DictAction, default={})
    return parser.parse_args(['--options', *options]).options if options else {}


def last_checkpoint_name(config: str, cfg_options: dict) -> str:
    """``epoch_<max_epochs>.pth`` or ``iter_<max_iters>.pth``: what a finished run saves last."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options)
    train_cfg = cfg.get('train_cfg') or {}
    if 'max_epochs' in train_cfg:
        return f'epoch_{train_cfg["max_epochs"]}.pth'
    if 'max_iters' in train_cfg:
        return f'iter_{train_cfg["max_iters"]}.pth'
    raise ValueError(f'{config}: train_cfg has neither max_epochs nor max_iters')


def has_test_output(test_dir: str) -> bool:
    """Whether ``test_dir`` holds a test output with COCO metrics (``<ts>/<ts>.json``)."""
    for path in glob.glob(osp.join(test_dir, '*', '*.json')):
        if osp.basename(path) == osp.basename(osp.dirname(path)) + '.json':
            with open(path) as f:
                if 'coco/bbox_mAP' in json.load(f):
                    return True
    return False


# ----------------------------------------------------------------------------------- commands
def train_command(run: Run, args: argparse.Namespace) -> Command:
    """Train (``--resume``: from the latest checkpoint in the work dir, if there is one)."""
    extra = ['--resume', *args.train_args, *cfg_options_args(args)]
    if args.launcher == 'dist':
        script = script_path('dist_train.sh')
        return script_env(args), [
            'bash', script, run.config, str(args.gpus), '--work-dir', run.work_dir, *extra,
        ]  # fmt: skip
    if args.launcher == 'slurm':
        script = script_path('slurm_train.sh')
        job = f'{args.job_prefix}{run.name}'
        return script_env(args), [
            'bash', script, args.partition, job, run.config, run.work_dir, *extra,
        ]  # fmt: skip
    return {}, [
        args.python,
        script_path('train.py'),
        run.config,
        '--work-dir',
        run.work_dir,
        *extra,
    ]


def test_command(run: Run, args: argparse.Namespace) -> Command:
    """Test the last checkpoint into ``<work_dir>/test``."""
    checkpoint = osp.join(run.work_dir, run.last_checkpoint)
    extra = ['--work-dir', run.test_dir, *args.test_args, *cfg_options_args(args)]
    if args.launcher == 'dist':
        script = script_path('dist_test.sh')
        return script_env(args), ['bash', script, run.config, checkpoint, str(args.gpus), *extra]
    if args.launcher == 'slurm':
        script = script_path('slurm_test.sh')
        job = f'{args.job_prefix}{run.name}_test'
        return script_env(args), [
            'bash', script, args.partition, job, run.config, checkpoint, *extra,
        ]  # fmt: skip
    return {}, [args.python, script_path('test.py'), run.config, checkpoint, *extra]


def collect_command(runs: Sequence[Run], args: argparse.Namespace) -> Command:
    """Collect every run's work dir into ``WORK_ROOT/results.{md,json}``."""
    out = osp.join(args.work_root, 'results')
    return {}, [
        args.python, osp.relpath(COLLECT), *(r.work_dir for r in runs),
        '--out-md', f'{out}.md', '--out-json', f'{out}.json',
    ]  # fmt: skip


def script_env(args: argparse.Namespace) -> Dict[str, str]:
    """What the shell scripts read: the interpreter, and for Slurm the number of tasks."""
    env = {'PYTHON': args.python}
    if args.launcher == 'slurm':
        env['GPUS'] = str(args.gpus)
    return env


def cfg_options_args(args: argparse.Namespace) -> List[str]:
    return ['--cfg-options', *args.cfg_options] if args.cfg_options else []


def script_path(name: str) -> str:
    return osp.relpath(osp.join(TOOLS, name))


def show(command: Command) -> str:
    env, argv = command
    return ' '.join([*(f'{k}={shlex.quote(v)}' for k, v in env.items()), shlex.join(argv)])


def execute(command: Command, args: argparse.Namespace) -> bool:
    """Print a command, run it unless ``--dry-run``; True when it succeeded (or was not run)."""
    print(show(command), flush=True)
    if args.dry_run:
        return True
    env, argv = command
    full_env = {**os.environ, **env}
    return subprocess.run(argv, env=full_env).returncode == 0


# ------------------------------------------------------------------------------------- the run
def plan(args: argparse.Namespace) -> List[Run]:
    cfg_options = parse_cfg_options(args.cfg_options)
    runs = []
    for config in args.configs:
        name = config_name(config)
        runs.append(
            Run(
                name=name,
                config=config,
                work_dir=osp.join(args.work_root, name),
                last_checkpoint=last_checkpoint_name(config, cfg_options),
            )
        )
    duplicates = sorted({r.name for r in runs if [q.name for q in runs].count(r.name) > 1})
    if duplicates:
        raise ValueError(f'--configs: two configs named {duplicates} would share a work dir')
    return runs


def benchmark(args: argparse.Namespace) -> int:
    """Train, test and collect every run; returns the exit status."""
    runs = plan(args)
    if args.default_configs and LEFT_OUT:
        print(f'# not in the default set (name them in --configs to run them): {left_out_note()}')
    for run in runs:
        problem = start_problem(osp.relpath(osp.abspath(run.config), ROOT))
        if problem:
            print(
                f'coco_benchmark: warning: {run.name}: {problem}; it starts only from its '
                'checkpoints/ file converted from weights of your own (docs/weights.md)',
                file=sys.stderr,
                flush=True,
            )
    failed: List[str] = []
    for run in runs:
        print(f'\n# {run.name}: {run.config} -> {run.work_dir}', flush=True)
        checkpoint = osp.join(run.work_dir, run.last_checkpoint)
        if osp.isfile(checkpoint):
            print(f'# trained: {checkpoint} exists, training skipped')
        elif not execute(train_command(run, args), args):
            failed.append(f'{run.name} (training)')
            continue
        if has_test_output(run.test_dir):
            print(f'# tested: a COCO test output is in {run.test_dir}, test skipped')
            continue
        if not args.dry_run and not osp.isfile(checkpoint):
            failed.append(f'{run.name} (training ended without {checkpoint})')
            continue
        if not execute(test_command(run, args), args):
            failed.append(f'{run.name} (test)')

    done = [r for r in runs if args.dry_run or osp.isdir(r.work_dir)]
    print('\n# the table', flush=True)
    if done and not execute(collect_command(done, args), args):
        failed.append('collect_results')
    if failed:
        print(f'\ncoco_benchmark: failed: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=f'Not in the default set: {left_out_note()}.' if LEFT_OUT else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        '--launcher',
        choices=LAUNCHERS,
        default='dist',
        help='dist: tools/dist_*.sh (torchrun on this machine); slurm: tools/slurm_*.sh; '
        'none: one tools/train.py / test.py process (default: %(default)s)',
    )
    parser.add_argument(
        '--gpus',
        type=int,
        default=os.environ.get('GPUS', '8'),
        help='processes (GPUs) per run: dist_*.sh GPUS, slurm_*.sh GPUS= (default: $GPUS or 8)',
    )
    parser.add_argument(
        '--partition',
        default=os.environ.get('PARTITION'),
        help='Slurm partition, needed by --launcher slurm (default: $PARTITION)',
    )
    parser.add_argument(
        '--job-prefix',
        default='coco_',
        help='Slurm job names: PREFIX<config name> (default: coco_)',
    )
    parser.add_argument(
        '--work-root',
        default='work_dirs/coco_benchmark',
        help='one work dir per config under it, and results.{md,json} (default: %(default)s)',
    )
    parser.add_argument(
        '--configs',
        nargs='+',
        metavar='NAME',
        help='benchmark configs (names as listed above) or other config files (default: the '
        f'{len(DEFAULT_CONFIGS)} that can start: '
        f'{", ".join(config_name(c) for c in DEFAULT_CONFIGS)})',
    )
    parser.add_argument(
        '--train-args',
        default='',
        help='extra tools/train.py arguments, one string, given with "=" as it starts with a '
        'dash: --train-args="--auto-scale-lr --amp"',
    )
    parser.add_argument(
        '--test-args', default='', help='extra tools/test.py arguments: --test-args="--tta"'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        metavar='KEY=VALUE',
        help='config overrides for training and test (train.py / test.py --cfg-options)',
    )
    parser.add_argument('--dry-run', action='store_true', help='print the commands, run nothing')
    args = parser.parse_args(argv)

    if args.gpus < 1:
        parser.error(f'--gpus {args.gpus}: need at least 1')
    if args.launcher == 'slurm' and not args.partition:
        parser.error('--launcher slurm needs a partition: --partition NAME or PARTITION=NAME')
    args.default_configs = args.configs is None
    if args.default_configs:
        args.configs = [config_name(c) for c in DEFAULT_CONFIGS]
    try:
        args.configs = [resolve_config(c) for c in args.configs]
    except ValueError as e:
        parser.error(str(e))
    args.train_args = shlex.split(args.train_args)
    args.test_args = shlex.split(args.test_args)
    args.python = os.environ.get('PYTHON', sys.executable)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return benchmark(args)
    except ValueError as e:
        sys.exit(f'coco_benchmark: {e}')


if __name__ == '__main__':
    sys.exit(main())
