"""Convert FishNet ImageNet weights for mmfish / MMDetection.

Reads the authors' checkpoints (github kevin-ssy/FishNet: the plain ``fishnet99/150/201_ckpt.tar``
and the "well-trained" ``fishnet150_ckpt_welltrained.tar``) and pytorchcv's FishNet state dicts
(``fishnet99`` / ``fishnet150``, saved with ``torch.save(net.state_dict(), path)``); the layout is
detected from the key names and printed.

Example::

    python tools/model_converters/fishnet2mmdet.py fishnet150_ckpt.tar \
        checkpoints/fishnet150_in1k_mmfish.pth

then, in a config::

    backbone=dict(type='FishNet', arch='fishnet150',
                  init_cfg=dict(type='Pretrained',
                                checkpoint='checkpoints/fishnet150_in1k_mmfish.pth'))

The variant is told from the checkpoint; ``--arch`` makes a file of another variant an error.
The ImageNet score head is dropped by default (a detector does not use it); ``--keep-score``
keeps it as ``score.*`` for ``FishNet(num_classes=1000)`` and the timm models;
``--mmpretrain`` writes a whole MMPretrain ``ImageClassifier`` (``backbone.*``, ``head.score.*``)
for the classification configs (``configs/classification/``). The mapping lives in
:mod:`mmfish.models.converters`. On any error nothing is written.
"""

import argparse
import sys
from collections import OrderedDict

import torch

from mmfish.models.converters import (
    REFERENCE_ARCHS,
    FishNetConversionError,
    convert_checkpoint,
    describe_layout,
)
from mmfish.models.converters.convert import convert as _convert
from mmfish.utils.cli import add_debug_argument, debug_hint, debug_requested


def convert(state_dict: 'OrderedDict[str, torch.Tensor]') -> 'OrderedDict[str, torch.Tensor]':
    """Map a FishNet state dict (any supported layout) onto mmfish names (score head dropped).

    Same as :func:`mmfish.models.converters.convert.convert` with its defaults, in the shape of
    mmdet's converters.
    """
    return _convert(state_dict)


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Convert FishNet ImageNet weights (the authors' fishnet99/150/201_ckpt.tar, "
        'fishnet150_ckpt_welltrained.tar, or a pytorchcv fishnet99/150 state dict) to mmfish '
        'FishNet names.'
    )
    parser.add_argument(
        'src', help='checkpoint or state dict (reference, well-trained or pytorchcv layout)'
    )
    parser.add_argument('dst', help='output file, loadable by FishNet init_cfg Pretrained')
    score = parser.add_mutually_exclusive_group()
    score.add_argument(
        '--keep-score',
        dest='keep_score',
        action='store_true',
        help='keep the ImageNet score head as score.* (for FishNet(num_classes=1000))',
    )
    score.add_argument(
        '--mmpretrain',
        action='store_true',
        help='write a whole MMPretrain ImageClassifier checkpoint (backbone.*, head.score.*) for '
        'configs/classification/ and tools/test.py',
    )
    score.add_argument(
        '--drop-score',
        dest='keep_score',
        action='store_false',
        help='drop the score head (default; for detection)',
    )
    parser.add_argument(
        '--arch',
        choices=REFERENCE_ARCHS,
        default=None,
        help='fail unless the checkpoint is this variant',
    )
    add_debug_argument(parser)
    parser.set_defaults(keep_score=False)
    return parser.parse_args()


def main() -> None:
    """Convert SRC to DST; exit with status 1 and a message on a bad checkpoint.

    ``--debug`` (or ``MMFISH_DEBUG=1``) lets the exception and its traceback through instead.
    """
    args = parse_args()
    try:
        meta = convert_checkpoint(
            args.src,
            args.dst,
            keep_score=args.keep_score,
            arch=args.arch,
            classifier=args.mmpretrain,
        )
    except (FishNetConversionError, FileNotFoundError) as error:
        if debug_requested():
            raise
        print(
            f'fishnet2mmdet: error: {type(error).__name__}: {error} {debug_hint()}', file=sys.stderr
        )
        sys.exit(1)
    score = (
        f'as an MMPretrain ImageClassifier with its {meta["num_classes"]}-class score head'
        if args.mmpretrain
        else f'with its {meta["num_classes"]}-class score head'
        if meta['with_score']
        else ('without score head')
    )
    print(
        f'Converted {args.src} ({meta["arch"]}, read in {describe_layout(meta["layout"])}) '
        f'to {args.dst}, {score}.'
    )


if __name__ == '__main__':
    main()
