"""Write ``docs/benchmark_gpu.md`` from the files a GPU session produced (tools/dev/gpu_session.sh).

    python tools/dev/gpu_report.py --dir DIR [--setup-log FILE] [--out docs/benchmark_gpu.md]

Reads from DIR what is there: ``bench_backbone.json`` and ``bench_detector.json``
(``tools/analysis_tools/benchmark_backbone.py --out-json``), ``demo_summary.json``
(``tools/demo.py``) and ``steps.txt`` (the session's steps and their times); with
``--setup-log``, the mmcv build time that ``tools/setup_env.sh`` printed. Every figure in the
output is read from those files; nothing is typed in. Sections whose file is missing say so.
"""

import argparse
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Tuple

TOOLS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'analysis_tools')
PRECISIONS = ('fp32', 'bf16', 'fp16')
MODES = ('fwd', 'fwd+bwd')
# The speed targets (issue 14, "Deliver" 4)
TARGET_RATIO_TO_R50 = 1.8  # FishNet-150 training step at 800x1216 b2, bf16, vs ResNet-50
TARGET_CP_OVERHEAD = 1.5  # with_cp step time over the plain step

Key = Tuple[str, str, str, str, int, int, int]  # model, format, precision, mode, h, w, batch


def load(path: str) -> Optional[dict]:
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def index(report: dict) -> Dict[Key, dict]:
    return {
        (r['model'], r['memory_format'], r['precision'], r['mode'], r['height'], r['width'],
         r['batch']): r
        for r in report['results']
    }  # fmt: skip


def label(precision: str, report: dict) -> str:
    return 'tf32' if precision == 'fp32' and report['settings'].get('tf32') else precision


def ms(row: Optional[dict]) -> str:
    return '-' if row is None or row.get('median_s') is None else f'{row["median_s"] * 1e3:.1f}'


def compact_tables(report: dict, what: str) -> List[str]:
    """Per input size: ms per step (median) for each model, precision and mode; peak memory."""
    rows = index(report)
    shapes = sorted({k[4:] for k in rows}, key=lambda s: (s[0] * s[1] * s[2]))
    formats = sorted({k[1] for k in rows})
    precisions = [p for p in PRECISIONS if p in report['settings']['precisions']]
    modes = [m for m in MODES if m in report['settings']['modes']]
    lines = []
    for h, w, b in shapes:
        for fmt in formats:
            models = [m for m in dict.fromkeys(k[0] for k in rows) if any(
                (m, fmt, p, mode, h, w, b) in rows for p in precisions for mode in modes
            )]  # fmt: skip
            if not models:
                continue
            fmt_name = 'NHWC' if fmt == 'channels_last' else 'NCHW'
            head = [f'{label(p, report)} {mode}' for p in precisions for mode in modes]
            mem = [f'peak MiB {label(p, report)} {modes[-1]}' for p in precisions]
            lines += [
                f'**{what}, {h}x{w} batch {b}, {fmt_name}**: ms per step, median',
                '',
                '| model | ' + ' | '.join(head + mem) + ' |',
                '|---|' + '--:|' * (len(head) + len(mem)),
            ]
            for m in models:
                cells = [
                    ms(rows.get((m, fmt, p, mode, h, w, b))) for p in precisions for mode in modes
                ]
                for p in precisions:
                    r = rows.get((m, fmt, p, modes[-1], h, w, b))
                    peak = None if r is None else r.get('peak_memory_mib')
                    cells.append('-' if peak is None else f'{peak:.0f}')
                lines.append(f'| {m} | ' + ' | '.join(cells) + ' |')
            lines.append('')
    return lines


def ratio(num: Optional[dict], den: Optional[dict]) -> Optional[float]:
    if num is None or den is None:
        return None
    return num['median_s'] / den['median_s']


def verdict(value: Optional[float], limit: float, below: bool = True) -> str:
    if value is None:
        return 'not measured'
    ok = value <= limit if below else value >= limit
    return f'{value:.2f} ({"met" if ok else "MISSED"})'


def targets(backbone: Optional[dict], detector: Optional[dict]) -> List[str]:
    """The issue's speed targets, each figure read from the benchmark results."""
    lines = ['| target | where | measured |', '|---|---|--:|']
    for name, report in (('backbone', backbone), ('Mask R-CNN train step', detector)):
        if report is None:
            continue
        rows = index(report)
        for precision in PRECISIONS:
            if precision not in report['settings']['precisions']:
                continue
            key = ('channels_last', precision, 'fwd+bwd', 800, 1216, 2)
            r = ratio(rows.get(('fishnet150', *key)), rows.get(('resnet50', *key)))
            lines.append(
                f'| FishNet-150 / ResNet-50, training step, <= {TARGET_RATIO_TO_R50} '
                f'(the target is bf16) | {name}, 800x1216 b2, NHWC {label(precision, report)} '
                f'| {verdict(r, TARGET_RATIO_TO_R50)} |'
            )
            shapes = sorted({k[4:] for k in rows})
            for h, w, b in shapes:
                k = ('channels_last', precision, 'fwd+bwd', h, w, b)
                for suffix, what in (('+cp', 'with_cp=True'), ('+cps', "with_cp='stage'")):
                    r = ratio(rows.get((f'fishnet150{suffix}', *k)), rows.get(('fishnet150', *k)))
                    if r is not None:
                        lines.append(
                            f'| {what} time / plain time, <= {TARGET_CP_OVERHEAD} | {name}, '
                            f'{h}x{w} b{b}, NHWC {label(precision, report)} '
                            f'| {verdict(r, TARGET_CP_OVERHEAD)} |'
                        )
                for mode in MODES:
                    for fmt in ('channels_last', 'contiguous'):
                        k = (fmt, precision, mode, h, w, b)
                        r = ratio(
                            rows.get(('reference-fishnet150', *k)), rows.get(('fishnet150', *k))
                        )
                        if r is not None:
                            lines.append(
                                f'| speed-up over the reference (same format, precision), >= 1 '
                                f'| {name}, {h}x{w} b{b}, {mode}, '
                                f'{"NHWC" if fmt == "channels_last" else "NCHW"} '
                                f'{label(precision, report)} | {verdict(r, 1.0, below=False)} |'
                            )
    return lines


def full_table(report: dict) -> List[str]:
    """The benchmark's own Markdown table (all columns), regenerated from its JSON."""
    sys.path.insert(0, TOOLS)
    try:
        from benchmark_backbone import markdown
    finally:
        sys.path.pop(0)
    return markdown(report).splitlines()


def build_time(setup_log: Optional[str]) -> Optional[str]:
    if not setup_log or not osp.isfile(setup_log):
        return None
    with open(setup_log, errors='replace') as f:
        text = f.read()
    took = re.findall(r'mmcv build took (\d+) s', text)
    how = re.findall(r'building mmcv with (FORCE_CUDA=.*) in ', text)
    if not took:
        return None
    return f'{took[-1]} s ({how[-1] if how else "settings not logged"})'


def report_lines(args: argparse.Namespace) -> List[str]:
    backbone = load(osp.join(args.dir, 'bench_backbone.json'))
    detector = load(osp.join(args.dir, 'bench_detector.json'))
    demo = load(osp.join(args.dir, 'demo_summary.json'))
    machine = (backbone or detector or {}).get('machine')
    lines = ['# FishNet on an NVIDIA GPU: measured', '']
    if machine:
        lines += [
            f'Machine: {machine.get("gpu", "?")} ({machine.get("gpu_memory_gib", "?")} GiB), '
            f'CUDA {machine.get("cuda")}, cuDNN {machine.get("cudnn")}, torch {machine["torch"]}, '
            f'Python {machine["python"]}, host {machine["cpu"]} ({machine["logical_cpus"]} logical '
            'CPUs). Produced by `bash tools/dev/gpu_session.sh build` then `... measure`; tables '
            'written by `python tools/dev/gpu_report.py --dir RESULTS --setup-log SETUP_LOG` (as '
            "`gpu_session.sh`'s report step runs it) from the benchmark JSON files.",
            '',
        ]
    built = build_time(args.setup_log)
    lines += ['## Set-up', '']
    lines.append(
        f'mmcv 2.1.0 with its CUDA ops, built on the machine by `tools/setup_env.sh` '
        f'(FORCE_CUDA=1, offline from wheels): {built}.'
        if built
        else 'No mmcv build time in the set-up log.'
    )
    lines.append('')
    lines += ['## Speed targets (issue 14)', ''] + targets(backbone, detector) + ['']
    for name, report in (('Backbone', backbone), ('Mask R-CNN', detector)):
        lines += [f'## {name}', '']
        if report is None:
            lines += ['Not measured in this session.', '']
            continue
        lines += compact_tables(report, name)
        lines += ['<details><summary>All columns</summary>', '']
        lines += full_table(report) + ['', '</details>', '']
    lines += ['## The shapes demo on the GPU (`tools/demo.py --amp`)', '']
    if demo is None:
        lines += ['Not run in this session.', '']
    else:
        lines += [
            f'Device {demo.get("device")}, optimizer wrapper {demo.get("optim_wrapper")}: '
            f'{demo["wall_time_s"]} s wall time (data generation, training, evaluations); '
            f'metrics {json.dumps(demo["metrics"])}; targets {json.dumps(demo["targets"])} '
            f'{"met" if demo["targets_met"] else "NOT met"}.',
            '',
        ]
    steps = osp.join(args.dir, 'steps.txt')
    if osp.isfile(steps):
        lines += ['## Session steps (name, exit status, seconds)', '', '```']
        lines += open(steps).read().splitlines() + ['```', '']
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--dir', required=True, help='the folder with the session files')
    parser.add_argument('--setup-log', help="tools/setup_env.sh's output (for the build time)")
    parser.add_argument('--out', help='write here (default: print)')
    args = parser.parse_args(argv)
    if not osp.isdir(args.dir):
        parser.error(f'--dir {args.dir}: no such folder')
    text = '\n'.join(report_lines(args)) + '\n'
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text)
    print(text)


if __name__ == '__main__':
    main()
