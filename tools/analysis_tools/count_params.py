"""Print the parameters and FLOPs of every FishNet variant (the README's model table).

    python tools/analysis_tools/count_params.py [--shape 800x1216] [--no-flops]

Parameters: the classifier (1000 classes, the reference's network), and the detection backbone
(the default ``out_indices=(7, 8, 9, 10)``) without and with its out norms. FLOPs: the default
detection backbone on one image of ``--shape``, counted by mmengine's ``FlopAnalyzer`` (one
multiply-accumulate counts as one FLOP, as mmdet's ``get_flops.py`` reports; the same count as
``benchmark_backbone.py``'s GMACs column).
"""

import argparse

import torch
from benchmark_backbone import count_macs, parse_shape

from mmfish.models import FishNet


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description='Print the parameters of every FishNet variant as a Markdown table: the '
        'classifier (1000 classes), the detection backbone without and with its out norms, and '
        'the GFLOPs of the detection backbone at --shape (mmengine FlopAnalyzer, one '
        'multiply-accumulate = one FLOP).'
    )
    parser.add_argument(
        '--shape', default='800x1216', help='HxW of the FLOPs count, multiples of 32 (%(default)s)'
    )
    parser.add_argument('--no-flops', action='store_true', help='parameters only')
    args = parser.parse_args()
    try:
        height, width, _ = parse_shape(args.shape, None)
    except argparse.ArgumentTypeError as error:
        parser.error(f'--shape: {error}')
    if height % 32 or width % 32:
        parser.error(f'--shape {args.shape}: FishNet needs multiples of 32, e.g. 800x1216')
    flops = '' if args.no_flops else f' GFLOPs {height}x{width}, backbone (out_norm=True) |'
    print(
        '| variant | classifier (1000 classes) | backbone, out_norm=False '
        f'| backbone, out_norm=True |{flops}'
    )
    print('|---|---|---|---|' + ('' if args.no_flops else '---|'))
    for arch in FishNet.arch_settings:
        classifier = count(FishNet(arch, out_norm=False, num_classes=1000))
        raw = count(FishNet(arch, out_norm=False))
        backbone = FishNet(arch)
        row = f'| {arch} | {classifier:,} | {raw:,} | {count(backbone):,} |'
        if not args.no_flops:
            macs = count_macs(backbone, height, width, torch.device('cpu'))
            row += f' {macs / 1e9:.2f} |'
        print(row, flush=True)


if __name__ == '__main__':
    main()
