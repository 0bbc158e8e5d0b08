"""Write a config that is an mmdet or mmseg config with FishNet in place of its ResNet.

    python tools/misc/swap_backbone.py mmdet::retinanet/retinanet_r50_fpn_1x_coco.py \\
        configs/my_retinanet_fishnet150.py

The written config inherits the original (``_base_``; ``mmdet::`` / ``mmseg::`` names for the
installed toolboxes' configs, a relative path for a file of yours) and states only what changed:
the backbone (FishNet at the ResNet's strides, ImageNet start, ``norm_eval`` and frozen stages as
the ResNet had them), every channel count that reads the backbone (neck, heads), the padding and
normalisation FishNet needs, and the FishNet detectors' gradient clipping. The rules live in
:mod:`mmfish.zoo.swap`; docs/zoo.md lists the model families they were run on. A config whose
backbone is not a ResNet, or a consumer of its channels that the swap does not know, is a
one-line error naming the key.
"""

import argparse
import os.path as osp
from typing import Optional, Sequence

from mmfish.models.backbones.variants import ARCH_SETTINGS
from mmfish.utils.cli import CliError, add_debug_argument, run_cli
from mmfish.utils.io import write_text_atomically
from mmfish.zoo.swap import load, swap_backbone


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write a config: an mmdet / mmseg config with FishNet in place of its ResNet.'
    )
    parser.add_argument('config', help='the ResNet config: a path, or mmdet::NAME / mmseg::NAME')
    parser.add_argument('out', help='the config to write (.py)')
    parser.add_argument('--arch', default='fishnet150', choices=sorted(ARCH_SETTINGS))
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        '--checkpoint',
        default='default',
        help='the converted ImageNet file the backbone starts from (default: the one the mmfish '
        'configs name for --arch, when the ResNet started from ImageNet weights)',
    )
    start.add_argument(
        '--no-pretrained',
        action='store_true',
        help='no ImageNet start: from scratch (nothing frozen, norms trained)',
    )
    parser.add_argument('--force', action='store_true', help='overwrite OUT if it exists')
    add_debug_argument(parser)
    return parser.parse_args(argv)


def base_reference(config: str, reference: str, out: str) -> str:
    """How ``out`` names the original: its ``pkg::`` name, else its path relative to ``out``."""
    if '::' in reference:
        return reference
    return osp.relpath(osp.realpath(config), osp.dirname(osp.realpath(out)))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if not args.out.endswith('.py'):
        raise CliError(f'{args.out}: the output must be a .py config file')
    if osp.exists(args.out) and not args.force:
        raise CliError(f'{args.out} exists: choose another path, or --force to overwrite it')
    cfg, reference = load(args.config)
    checkpoint = None if args.no_pretrained else args.checkpoint
    swap = swap_backbone(
        cfg, base_reference(args.config, reference, args.out), args.arch, checkpoint
    )
    write_text_atomically(args.out, swap.text())
    print(
        f'{args.out}: {swap.resnet} -> {args.arch}, features {swap.out_indices} at strides '
        f'{swap.strides}; channels rewritten: {", ".join(swap.rewritten) or "none"}'
    )


if __name__ == '__main__':
    run_cli(main)
