"""Export a config's FishNet backbone, or backbone and neck, to ONNX and check it in onnxruntime.

The ONNX model takes ``input``, an ``N x 3 x H x W`` float32 batch with dynamic N, H and W (H and
W multiples of 32), and returns the backbone's features (``feature7`` ... ``feature10``) or the
neck's maps (``neck_s4`` ... ``neck_s64``). After the export the tool runs seeded random inputs
of each ``--check-shapes`` size through PyTorch and onnxruntime and prints each size's largest
relative error (``max |onnx - torch| / max |torch|`` of the worst output); above ``--tolerance``
it exits with status 1. ``--benchmark`` then times both on the same inputs (docs/deployment.md).

Examples::

    # FishNet-150 and its FPN, with the weights of a trained detector
    python tools/deployment/pytorch2onnx.py configs/mask_rcnn_fishnet150_fpn_1x_coco.py \\
        --checkpoint work_dirs/mask_rcnn_fishnet150_fpn_1x_coco/epoch_12.pth
    # the backbone alone, ImageNet weights, checked at three sizes, timed against PyTorch
    python tools/deployment/pytorch2onnx.py configs/mask_rcnn_fishnet99_fpn_1x_coco.py \\
        --part backbone --checkpoint checkpoints/fishnet99_in1k_mmfish.pth \\
        --check-shapes 1x3x224x224 2x3x320x480 1x3x800x1216 --benchmark
"""

import argparse
import json
import os.path as osp
import sys
from typing import List, Optional, Sequence

import torch

from mmfish.deployment.onnx import (
    DEFAULT_CHECK_SHAPES,
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    EXPORTERS,
    ORT,
    PARTS,
    ExportError,
    as_dicts,
    build_model,
    check_parity,
    export_onnx,
    load_config,
    measure_latency,
    parse_shape,
    shape_text,
)
from mmfish.utils.cli import add_debug_argument, run_cli
from mmfish.utils.io import write_text_atomically

EXIT_PARITY = 1


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('config', help='an mmdet or mmseg config with a FishNet backbone')
    parser.add_argument(
        '--checkpoint',
        help="a trained model's checkpoint (backbone.* and neck.* keys) or a backbone's converted "
        'ImageNet file; without it, the seeded initial weights',
    )
    parser.add_argument(
        '--part',
        choices=PARTS,
        default='backbone+neck',
        help='what to export (default: %(default)s)',
    )
    parser.add_argument(
        '--out', help='the .onnx file to write (default: work_dirs/onnx/<config>_<part>.onnx)'
    )
    parser.add_argument(
        '--onnx',
        help='check (and with --benchmark time) this existing export of the same config and '
        'weights instead of exporting again',
    )
    parser.add_argument(
        '--exporter',
        choices=EXPORTERS,
        default='dynamo',
        help='torch.onnx.export(dynamo=True), or the TorchScript exporter (default: %(default)s)',
    )
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='(default: %(default)s)')
    parser.add_argument(
        '--check-shapes',
        nargs='+',
        default=[shape_text(s) for s in DEFAULT_CHECK_SHAPES],
        help='input sizes NxCxHxW (or HxW) to compare PyTorch and onnxruntime on; H and W '
        'multiples of 32 (default: %(default)s)',
    )
    parser.add_argument(
        '--tolerance',
        type=float,
        default=DEFAULT_TOLERANCE,
        help='largest relative error allowed, max |onnx - torch| / max |torch| per output '
        '(default: %(default)s)',
    )
    parser.add_argument(
        '--benchmark',
        action='store_true',
        help='time PyTorch and onnxruntime on each check shape, round-robin',
    )
    parser.add_argument('--repeat', type=int, default=10, help='timed runs each (default: 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs each (default: 2)')
    parser.add_argument(
        '--threads', type=int, default=2, help='threads of PyTorch and onnxruntime (default: 2)'
    )
    parser.add_argument('--seed', type=int, default=0, help='of the weights and the inputs')
    parser.add_argument('--out-json', help='write the export, parity and latency figures here')
    add_debug_argument(parser)
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad arguments before anything is built or written."""
    args.check_shapes = [parse_shape(s) for s in args.check_shapes]
    if args.out is None:
        stem = osp.splitext(osp.basename(args.config.split('::')[-1]))[0]
        args.out = osp.join('work_dirs', 'onnx', f'{stem}_{args.part.replace("+", "_")}.onnx')
    if not args.out.endswith('.onnx'):
        raise ExportError(f'--out {args.out}: name a .onnx file')
    if args.onnx is not None and not osp.isfile(args.onnx):
        raise ExportError(f'--onnx {args.onnx} does not exist: give an exported .onnx file')
    if args.tolerance <= 0 or args.repeat < 1 or args.warmup < 0 or args.threads < 1:
        raise ExportError('--tolerance must be > 0, --repeat and --threads >= 1, --warmup >= 0')


def parity_table(parity: List[dict], tolerance: float) -> str:
    lines = [
        f'Parity, max |onnx - torch| / max |torch| (tolerance {tolerance:g}):',
        '| input | max relative error | worst output |',
        '|---|--:|---|',
    ]
    for p in parity:
        worst = max(p['errors'], key=p['errors'].get)
        lines.append(f'| {shape_text(p["shape"])} | {p["max_error"]:.2e} | {worst} |')
    return '\n'.join(lines)


def latency_table(latency: List[dict]) -> str:
    engines = list(latency[0]['ms'])
    torch_models = [e for e in engines if e != ORT]
    lines = [
        'Latency, fp32, medians (minima) of round-robin runs, ms per forward:',
        '| input | threads | '
        + ' | '.join(engines)
        + ' | '
        + ' | '.join(f'{ORT} / {m}' for m in torch_models)
        + ' |',
        '|---|--:|' + '--:|' * (len(engines) + len(torch_models)),
    ]
    for t in latency:
        times = [f'{t["ms"][e]:.1f} ({t["min_ms"][e]:.1f})' for e in engines]
        ratios = [f'{t["ratio"][m]:.2f} ({t["ratio_min"][m]:.2f})' for m in torch_models]
        lines.append(
            f'| {shape_text(t["shape"])} | {t["threads"]} | ' + ' | '.join(times + ratios) + ' |'
        )
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    check_args(args)
    cfg = load_config(args.config)
    model = build_model(cfg, args.part, args.checkpoint, seed=args.seed)
    in_channels = getattr(model.backbone, 'in_channels', 3)
    for shape in args.check_shapes:
        if shape[1] != in_channels:
            raise ExportError(
                f'--check-shapes {shape_text(shape)}: the backbone takes {in_channels} channels; '
                f'give NxCxHxW with C={in_channels}'
            )
    torch.set_num_threads(args.threads)
    weights = args.checkpoint or f'the seeded initialisation, seed {args.seed}'
    if args.onnx is not None:
        args.out, export = args.onnx, dict(reused=args.onnx)
        print(f'Checking {args.onnx} against {args.part} of {args.config} (weights: {weights}).')
    else:
        export = export_onnx(model, args.out, args.exporter, args.opset, in_channels)
        print(
            f'Exported {args.part} of {args.config} (weights: {weights}) to {args.out} with the '
            f'{args.exporter} exporter, opset {args.opset}: {export["size_mib"]:.1f} MiB in '
            f'{export["export_s"]:.1f} s. Input {export["input"]!r}: N x {in_channels} x H x W, '
            f'dynamic, H and W multiples of 32; outputs {", ".join(export["outputs"])}.'
        )
    parity = as_dicts(check_parity(model, args.out, args.check_shapes, args.seed, args.threads))
    print(parity_table(parity, args.tolerance))
    report = dict(
        config=args.config, checkpoint=args.checkpoint, part=args.part, out=args.out,
        export=export, tolerance=args.tolerance, parity=parity,
        torch=torch.__version__, command=' '.join(['python', *sys.argv]),
    )  # fmt: skip
    if args.benchmark:
        models = {'PyTorch NCHW': model}
        if type(model.backbone).__name__ == 'FishNet':  # and FishNet's default CPU path
            fast = build_model(cfg, args.part, seed=args.seed, channels_last=True)
            fast.load_state_dict(model.state_dict())
            models['PyTorch channels-last'] = fast
        latency = [
            measure_latency(models, args.out, shape, args.threads, args.repeat, args.warmup)
            for shape in args.check_shapes
        ]
        report['latency'] = as_dicts(latency)
        print(latency_table(report['latency']))
    if args.out_json:
        write_text_atomically(args.out_json, json.dumps(report, indent=1) + '\n')
    worst = max(p['max_error'] for p in parity)
    if worst > args.tolerance:
        print(
            f'pytorch2onnx.py: parity FAILED: relative error {worst:.2e} > {args.tolerance:g} '
            f'(the ONNX file {args.out} does not compute what PyTorch does)',
            file=sys.stderr,
        )
        sys.exit(EXIT_PARITY)
    return report


if __name__ == '__main__':
    run_cli(main)
