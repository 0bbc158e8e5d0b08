"""Generates the synthetic COCO-format "shapes" instance-segmentation dataset.

Example::

    python tools/misc/generate_shapes_coco.py data/shapes --num-train 300 --num-val 50
"""

import argparse
import json
import time

from mmfish.datasets import generate_shapes_coco


def build_parser() -> argparse.ArgumentParser:
    """Builds the command-line parser."""
    parser = argparse.ArgumentParser(
        description='Generate the synthetic COCO-format shapes dataset (circle, rectangle, '
        'triangle). Does nothing if an identical dataset already exists in ROOT.'
    )
    parser.add_argument(
        'root', nargs='?', default='data/shapes', help='output directory (default: data/shapes)'
    )
    parser.add_argument('--num-train', type=int, default=300, help='training images')
    parser.add_argument('--num-val', type=int, default=50, help='validation images')
    parser.add_argument('--image-size', type=int, default=256, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--overwrite', action='store_true', help='regenerate even if the dataset exists'
    )
    return parser


def main() -> None:
    """Generates the dataset and prints its summary."""
    parser = build_parser()
    args = parser.parse_args()
    start = time.perf_counter()
    try:
        summary = generate_shapes_coco(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=args.image_size,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    summary['seconds'] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
