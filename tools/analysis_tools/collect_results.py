"""Collect COCO results from mmengine work dirs into one Markdown and one JSON table.

    python tools/analysis_tools/collect_results.py WORK_DIR [WORK_DIR ...] \\
        --out-md results.md --out-json results.json

Each WORK_DIR is one training run: the directory given to ``tools/train.py --work-dir`` (or made
by ``tools/coco_benchmark.py``). From it, for mmengine 0.10 / mmdet 3.3:

- **detector and backbone**: the config mmengine dumped into the work dir
  (``<work_dir>/<config name>.py``, else ``<work_dir>/<timestamp>/vis_data/config.py``);
- **COCO AP** (box, and mask for Mask R-CNN: AP, AP50, AP75, APs, APm, APl): the newest test
  output, ``<work_dir>/test/<timestamp>/<timestamp>.json`` (where ``tools/coco_benchmark.py``
  tests) or ``<work_dir>/<timestamp>/<timestamp>.json`` (``tools/test.py``'s default work dir is
  the training's); without one, the last validation in the training log, with a note;
- **seconds per iteration**: the training log, ``<work_dir>/<timestamp>/vis_data/scalars.json``
  (every timestamp of a resumed run; a step logged twice counts once, the later): the mean of
  the logged ``time`` values (each is the mean over the log processor's window), leaving out the
  first one of each epoch, as mmdet's ``tools/analysis_tools/analyze_logs.py cal_train_time``
  does;
- **parameters** of the whole detector, and **FLOPs** of its backbone + neck on one image of
  ``--flops-shape`` (default 800x1216), counted by mmengine's ``FlopAnalyzer`` through
  ``benchmark_backbone.count_macs`` (one multiply-accumulate counts as one FLOP, as mmdet's
  ``get_flops.py`` reports). The heads are left out: with random weights the number of
  proposals they see, and so their FLOPs, is arbitrary; they are the same for every backbone;
- **deltas**: each FishNet run against the ResNet run of the same detector type (ResNet-50
  preferred), in AP points, beside the paper's (FishNet-150 only: Faster R-CNN FPN +2.6 box AP;
  Mask R-CNN +2.8 box AP, +2.3 mask AP). The paper's baseline is its own ResNet-50 training.

A missing figure is a "-" with a note saying why; a directory that is not a work dir stops the
run with a message naming it.
"""

import argparse
import datetime
import json
import logging
import os
import os.path as osp
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from benchmark_backbone import count_macs, parse_shape
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.logging import MMLogger

TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
METRICS = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')
METRIC_HEADERS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')
TASKS = {'bbox': 'box', 'segm': 'mask'}
DETECTOR_NAMES = {'FasterRCNN': 'Faster R-CNN', 'MaskRCNN': 'Mask R-CNN'}
BASELINE_BACKBONE = 'ResNet'
BASELINE_DEPTH = 50
# The paper (Sun et al. 2018, COCO, FPN and Mask R-CNN with the same settings but the backbone):
# AP points of FishNet-150 over ResNet-50. Keys: (detector type, FishNet arch).
PAPER_DELTAS: Dict[Tuple[str, str], Dict[str, float]] = {
    ('FasterRCNN', 'fishnet150'): {'bbox_mAP': 2.6},
    ('MaskRCNN', 'fishnet150'): {'bbox_mAP': 2.8, 'segm_mAP': 2.3},
}
DEFAULT_FLOPS_SHAPE = '800x1216'


class WorkDirError(ValueError):
    """A path given as a work dir is not one."""


@dataclass
class WorkDirFiles:
    """The files of one work dir that the table reads."""

    path: str
    config: Optional[str]
    train_logs: List[str]
    test_outputs: List[str]


@dataclass
class RunResult:
    """One row of the table: a work dir's figures, each None where it could not be read."""

    name: str
    work_dir: str
    config: Optional[str] = None
    detector: Optional[str] = None
    backbone: Optional[str] = None
    backbone_type: Optional[str] = None
    arch: Optional[str] = None
    depth: Optional[int] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    metrics_source: Optional[str] = None
    s_per_iter: Optional[float] = None
    train_iters_logged: Optional[int] = None
    params: Optional[int] = None
    gflops: Optional[float] = None
    baseline: Optional[str] = None
    delta_points: Dict[str, Optional[float]] = field(default_factory=dict)
    paper_delta_points: Dict[str, float] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    @property
    def is_fishnet(self) -> bool:
        return self.backbone_type == 'FishNet'

    @property
    def is_baseline(self) -> bool:
        return self.backbone_type == BASELINE_BACKBONE


# ------------------------------------------------------------------------------ reading files
def find_work_dir_files(path: str) -> WorkDirFiles:
    """The config dump, training logs and test outputs of a work dir.

    Raises:
        WorkDirError: ``path`` is missing, not a directory, empty, or holds none of them.
    """
    hint = (
        'pass the directory given to tools/train.py --work-dir (tools/coco_benchmark.py makes '
        'one per config under its --work-root)'
    )
    if not osp.exists(path):
        raise WorkDirError(f'{path}: no such directory; {hint}')
    if not osp.isdir(path):
        raise WorkDirError(f'{path}: not a directory; {hint}')
    if not os.listdir(path):
        raise WorkDirError(
            f'{path}: empty directory, not a work dir (nothing has run there?); {hint}'
        )

    stamped = sorted(d for d in os.listdir(path) if TIMESTAMP.match(d))
    train_logs = [
        p for d in stamped if osp.isfile(p := osp.join(path, d, 'vis_data', 'scalars.json'))
    ]
    test_outputs = [
        osp.join(root, d, f'{d}.json')
        for root in (path, osp.join(path, 'test'))
        if osp.isdir(root)
        for d in os.listdir(root)
        if TIMESTAMP.match(d) and osp.isfile(osp.join(root, d, f'{d}.json'))
    ]
    test_outputs.sort(key=lambda p: osp.basename(p))  # timestamps sort in time order
    dumps = sorted(
        (osp.join(path, f) for f in os.listdir(path) if f.endswith('.py')), key=osp.getmtime
    )
    vis_configs = [
        p for d in stamped if osp.isfile(p := osp.join(path, d, 'vis_data', 'config.py'))
    ]
    config = (dumps or vis_configs or [None])[-1]
    if config is None and not train_logs and not test_outputs:
        raise WorkDirError(
            f'{path}: not an mmengine work dir: no config dump (*.py), no training log '
            f'(<timestamp>/vis_data/scalars.json) and no test output '
            f'(<timestamp>/<timestamp>.json, also under test/); {hint}'
        )
    return WorkDirFiles(path, config, train_logs, test_outputs)


def read_json_lines(path: str) -> List[dict]:
    """The entries of an mmengine ``scalars.json`` (one JSON object a line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def is_train_entry(entry: dict) -> bool:
    """A training iteration's log entry (validation entries carry metrics, no ``iter``)."""
    return 'iter' in entry and 'time' in entry and not any(k.startswith('coco/') for k in entry)


def train_entries(train_logs: Sequence[str]) -> List[dict]:
    """Training entries of every log in time order; a step logged again (resume) counts once."""
    by_step: Dict[int, dict] = {}
    for path in train_logs:
        for entry in read_json_lines(path):
            if is_train_entry(entry):
                by_step[entry['step']] = entry  # the later run's, after a resume
    return [by_step[s] for s in sorted(by_step)]


def seconds_per_iteration(entries: Sequence[dict]) -> Optional[float]:
    """Mean logged ``time``, the first entry of each epoch left out (mmdet's cal_train_time).

    An epoch with a single entry keeps it. Iteration-based logs (no ``epoch``) are one group.
    """
    groups: Dict[object, List[float]] = {}
    for entry in entries:
        groups.setdefault(entry.get('epoch'), []).append(float(entry['time']))
    times = [t for group in groups.values() for t in (group[1:] if len(group) > 1 else group)]
    return sum(times) / len(times) if times else None


def coco_metrics(entry: dict) -> Dict[str, float]:
    """The ``coco/<task>_<metric>`` values of a log entry, keyed ``<task>_<metric>``."""
    return {
        f'{task}_{m}': float(entry[f'coco/{task}_{m}'])
        for task in TASKS
        for m in METRICS
        if f'coco/{task}_{m}' in entry
    }


def last_validation(train_logs: Sequence[str]) -> Optional[dict]:
    """The last log entry with COCO metrics from validation during training."""
    found = None
    for path in train_logs:
        for entry in read_json_lines(path):
            if 'coco/bbox_mAP' in entry:
                found = entry
    return found


# ----------------------------------------------------------------------------- model figures
class FeatureExtractor(nn.Module):
    """A detector's backbone + neck as one module: ``forward`` is ``extract_feat``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.detector.extract_feat(x))


def describe_backbone(backbone_cfg: dict) -> Tuple[str, str, Optional[str], Optional[int]]:
    """(label, type, arch, depth) of a backbone config: ``'FishNet-150'``, ``'FishNeXt-150'``,
    ``'ResNet-50'``..."""
    kind = str(backbone_cfg.get('type', '?')).split('.')[-1]  # 'mmdet.ResNet' -> 'ResNet'
    if kind == 'FishNet':
        arch = backbone_cfg.get('arch', 'fishnet150')
        if isinstance(arch, str):
            family = 'FishNeXt' if arch.startswith('fishnext') else 'FishNet'
            return f'{family}-{arch[len(family) :]}', kind, arch, None
        return 'FishNet (custom arch)', kind, None, None
    depth = backbone_cfg.get('depth')
    label = f'{kind}-{depth}' if depth is not None else kind
    return label, kind, None, depth


def model_figures(
    cfg: Config, flops_shape: Optional[Tuple[int, int]]
) -> Tuple[int, Optional[float]]:
    """Parameters of the detector and GFLOPs of its backbone + neck (None if not asked)."""
    model = MODELS.build(cfg.model)  # random weights: no init_weights, nothing downloaded
    params = sum(p.numel() for p in model.parameters())
    if flops_shape is None:
        return params, None
    height, width = flops_shape
    macs = count_macs(FeatureExtractor(model), height, width, torch.device('cpu'))
    return params, macs / 1e9


# ------------------------------------------------------------------------------------ one run
def describe_model(result: RunResult, config: str, flops_shape: Optional[Tuple[int, int]]) -> None:
    """Detector, backbone, parameters and FLOPs from the config dump; a failure is a note."""
    try:
        cfg = Config.fromfile(config)
        model_cfg = cfg.model
    except Exception as e:  # an unreadable config must not hide the logged figures
        result.notes.append(f'config dump {config} did not load: {e}')
        return
    result.detector = str(model_cfg.get('type', '?')).split('.')[-1]
    label, kind, arch, depth = describe_backbone(model_cfg.get('backbone', {}))
    result.backbone, result.backbone_type, result.arch, result.depth = label, kind, arch, depth
    try:
        result.params, result.gflops = model_figures(cfg, flops_shape)
    except Exception as e:  # a model that no longer builds must not hide the other figures
        result.notes.append(f'model did not build from {config}: {e}')


def collect_run(path: str, flops_shape: Optional[Tuple[int, int]]) -> RunResult:
    """Every figure of one work dir; what cannot be read becomes a note."""
    files = find_work_dir_files(path)
    result = RunResult(name=osp.basename(osp.normpath(path)), work_dir=path, config=files.config)

    if files.config is None:
        result.notes.append(
            'no config dump in the work dir: detector, parameters and FLOPs unknown'
        )
    else:
        describe_model(result, files.config, flops_shape)

    tests_with_metrics = []
    for output in files.test_outputs:
        with open(output) as f:
            metrics = coco_metrics(json.load(f))
        if metrics:
            tests_with_metrics.append((output, metrics))
    if tests_with_metrics:
        output, result.metrics = tests_with_metrics[-1]
        result.metrics_source = f'test: {output}'
    elif (val := last_validation(files.train_logs)) is not None:
        result.metrics = coco_metrics(val)
        result.metrics_source = f'validation at step {val.get("step")} of the training log'
        result.notes.append(
            f'no test output with COCO metrics: AP from the last validation in training (step '
            f'{val.get("step")})'
        )
    else:
        result.notes.append('no COCO metrics: no test output and no validation in the training log')
    if result.detector == 'MaskRCNN' and result.metrics and 'segm_mAP' not in result.metrics:
        result.notes.append('Mask R-CNN without mask (segm) metrics')

    entries = train_entries(files.train_logs)
    result.train_iters_logged = len(entries)
    result.s_per_iter = seconds_per_iteration(entries)
    if result.s_per_iter is None:
        result.notes.append('no training iterations logged: seconds per iteration unknown')
    return result


def fill_deltas(results: List[RunResult]) -> None:
    """Each FishNet run's AP points over the ResNet run of its detector type, and the paper's."""
    for run in results:
        if not run.is_fishnet:
            continue
        run.paper_delta_points = dict(PAPER_DELTAS.get((run.detector, run.arch), {}))
        candidates = [r for r in results if r.is_baseline and r.detector == run.detector]
        preferred = [r for r in candidates if r.depth == BASELINE_DEPTH] or candidates
        detector = DETECTOR_NAMES.get(run.detector, run.detector)
        if not preferred:
            run.notes.append(f'no {BASELINE_BACKBONE} {detector} run among the work dirs: no delta')
            continue
        baseline = preferred[0]
        run.baseline = baseline.name
        if len(preferred) > 1:
            others = ', '.join(r.name for r in preferred[1:])
            run.notes.append(
                f'several baselines: {baseline.name} used (the first given), not {others}'
            )
        if baseline.depth != BASELINE_DEPTH:
            run.notes.append(
                f'baseline {baseline.name} is {baseline.backbone}, not ResNet-50 as in the paper'
            )
        for key in ('bbox_mAP', 'segm_mAP'):
            if key not in run.metrics and key not in baseline.metrics:
                continue  # e.g. no mask AP for Faster R-CNN
            if key in run.metrics and key in baseline.metrics:
                run.delta_points[key] = round(100 * (run.metrics[key] - baseline.metrics[key]), 1)
            else:
                run.delta_points[key] = None
                missing = run.name if key not in run.metrics else baseline.name
                run.notes.append(f'{TASKS[key[:4]]} AP delta unknown: {missing} has no {key}')


def collect(
    work_dirs: Sequence[str], flops_shape: Optional[Tuple[int, int]] = (800, 1216)
) -> List[RunResult]:
    """The table's rows, in the order given, deltas filled.

    Raises:
        WorkDirError: a path is not a work dir (checked for all before any model is built).
    """
    for path in work_dirs:
        find_work_dir_files(path)
    results = [collect_run(path, flops_shape) for path in work_dirs]
    fill_deltas(results)
    return results


# ------------------------------------------------------------------------------------- report
def fmt(value: Optional[float], spec: str, scale: float = 1.0, sign: bool = False) -> str:
    if value is None:
        return '-'
    text = format(value * scale, spec)
    return f'+{text}' if sign and value > 0 else text


def ap_cell(value: Optional[float]) -> str:
    """An AP in %; COCO's -1 (no ground-truth object of that size) as "n/a"."""
    return 'n/a' if value is not None and value < 0 else fmt(value, '.1f', 100)


def markdown(
    results: Sequence[RunResult], flops_shape: Optional[Tuple[int, int]], command: str
) -> str:
    """The Markdown report: metrics table, delta table, conventions."""
    flops_header = f'GFLOPs {flops_shape[0]}x{flops_shape[1]}' if flops_shape else 'GFLOPs'
    box = ' | '.join(f'box {h}' for h in METRIC_HEADERS)
    mask = ' | '.join(f'mask {h}' for h in METRIC_HEADERS)
    lines = [
        '# COCO results',
        '',
        f'Collected by `{command}`.',
        '',
        f'| run | detector | backbone | {box} | {mask} | params (M) | {flops_header} '
        '| s/iter | notes |',
        '|---|---|---|' + '--:|' * 15 + '---|',
    ]
    for r in results:
        aps = [ap_cell(r.metrics.get(f'{t}_{m}')) for t in TASKS for m in METRICS]
        notes = '; '.join(r.notes).replace('|', '\\|')  # a '|' would end the cell
        lines.append(
            f'| {r.name} | {DETECTOR_NAMES.get(r.detector, r.detector or "-")} '
            f'| {r.backbone or "-"} | {" | ".join(aps)} | {fmt(r.params, ".2f", 1e-6)} '
            f'| {fmt(r.gflops, ".1f")} | {fmt(r.s_per_iter, ".3f")} | {notes} |'
        )
    fishnets = [r for r in results if r.is_fishnet]
    if fishnets:
        lines += [
            '',
            '## FishNet against ResNet (same detector), AP points',
            '',
            '| run | baseline | box AP delta | paper | mask AP delta | paper |',
            '|---|---|--:|--:|--:|--:|',
        ]
        for r in fishnets:
            cells = []
            for key in ('bbox_mAP', 'segm_mAP'):
                cells.append(fmt(r.delta_points.get(key), '.1f', sign=True))
                cells.append(fmt(r.paper_delta_points.get(key), '.1f', sign=True))
            lines.append(f'| {r.name} | {r.baseline or "-"} | {" | ".join(cells)} |')
    lines += [
        '',
        'AP: COCO AP in %, from the newest test output (else the last validation, noted); '
        'n/a: no ground-truth object of that size. '
        "Paper: Sun et al. 2018's FishNet-150 over its ResNet-50 (only FishNet-150 has figures). "
        'Params: the whole detector. GFLOPs: backbone + neck, batch 1, mmengine FlopAnalyzer '
        '(one multiply-accumulate = one FLOP, as mmdet get_flops.py). s/iter: mean logged '
        'iteration time, first log entry of each epoch left out (mmdet analyze_logs.py '
        'cal_train_time).',
    ]
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR', help='one per training run')
    parser.add_argument('--out-md', help='write the Markdown table here (it is also printed)')
    parser.add_argument('--out-json', help='write every figure and note here')
    parser.add_argument(
        '--flops-shape',
        default=DEFAULT_FLOPS_SHAPE,
        help='HxW of the FLOPs count, multiples of 32 (default: %(default)s)',
    )
    parser.add_argument('--no-flops', action='store_true', help='skip counting FLOPs')
    args = parser.parse_args(argv)
    if args.no_flops:
        args.flops_shape = None
    else:
        height, width, _ = parse_shape(args.flops_shape, None)
        if height % 32 or width % 32:
            parser.error(f'--flops-shape {args.flops_shape}: use multiples of 32')
        args.flops_shape = (height, width)
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[RunResult]:
    args = parse_args(argv)
    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    command = ' '.join(['python', osp.relpath(__file__), *(sys.argv[1:] if argv is None else argv)])
    try:
        results = collect(args.work_dirs, args.flops_shape)
    except WorkDirError as e:
        sys.exit(f'collect_results: {e}')
    table = markdown(results, args.flops_shape, command)
    print(table)
    if args.out_md:
        with open(args.out_md, 'w') as f:
            f.write(table)
    if args.out_json:
        report = dict(
            command=command,
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            flops_shape=list(args.flops_shape) if args.flops_shape else None,
            conventions=dict(
                metrics='mmdet CocoMetric values as logged (fractions of 1)',
                delta_points='100 x (FishNet - baseline), AP points, rounded to 0.1',
                paper_delta_points='Sun et al. 2018, FishNet-150 over ResNet-50, AP points',
                params='all parameters of the detector built from the config',
                gflops='FlopAnalyzer count of backbone + neck at flops_shape, batch 1, '
                'one multiply-accumulate = one FLOP',
                s_per_iter='mean logged "time", first entry of each epoch left out',
            ),
            runs=[asdict(r) for r in results],
        )
        with open(args.out_json, 'w') as f:
            json.dump(report, f, indent=1)
    return results


if __name__ == '__main__':
    main()
