"""Draw FishNet's eleven features for one image: stem, tail, bridge, body and head.

Each panel is one feature (index, part, channels and stride in its title), reduced to one map
by mmengine's ``Visualizer.draw_featmap`` (by default the mean over channels), scaled to 0-255
within the panel, coloured and laid over the image. The network runs in eval mode on the image
resized so that its longer side is ``--size`` and both sides are multiples of 32. Features are
the network's own (pre-activation, ``out_norm=False``), whatever the config asks for.

The model is a bare variant (``--arch fishnet150``: the reference's random initialisation unless
``--checkpoint`` gives weights, e.g. a converted ImageNet file) or a detector config's backbone
(``--config``; ``--checkpoint`` then takes the detector's ``backbone.*`` weights).

Writes ``DIR/feature_maps.png`` (``.jpg`` with ``--format jpg``) and ``DIR/feature_maps.json``
(the panels: index, part, channels, stride, map size).

Example (the picture in docs/analysis_tools.md, a randomly initialised FishNet-150)::

    IMG=$(python -c 'import matplotlib as m; print(m.get_data_path())')/sample_data/grace_hopper.jpg
    python tools/analysis_tools/feature_maps.py $IMG --arch fishnet150 --out-dir work_dirs/maps \\
        --format jpg
"""

import argparse
import copy
import json
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmfish.models import FishNet
from mmfish.models.converters import strip_module_prefix
from mmfish.utils.mim import tool_command
from mmfish.utils.paths import checkpoint_exists

NUM_FEATURES = 11
SIZE_DIVISOR = 32
# ImageNet statistics (RGB, 0-255): mmfish's configs and the reference use them.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# Rows of the picture: stem and tail, bridge and body, head.
ROWS = ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10))


def read_image(path: str) -> np.ndarray:
    """An RGB uint8 array, or an error naming the file that could not be read."""
    import mmcv

    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such image file')
    try:
        image = mmcv.imread(path, channel_order='rgb')
    except Exception as error:  # mmcv / OpenCV raise various errors on a broken file
        raise ValueError(f'{path}: cannot be read as an image ({error})') from None
    if image is None or image.ndim != 3:
        raise ValueError(f'{path}: cannot be read as an image (not a picture OpenCV decodes)')
    return image


def resize_to_multiple(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so that the longer side is about ``size``; both sides multiples of 32."""
    import mmcv

    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_h = max(SIZE_DIVISOR, round(h * scale / SIZE_DIVISOR) * SIZE_DIVISOR)
    new_w = max(SIZE_DIVISOR, round(w * scale / SIZE_DIVISOR) * SIZE_DIVISOR)
    return mmcv.imresize(image, (new_w, new_h))


def build_from_config(config: str) -> Tuple[FishNet, Tuple[float, ...], Tuple[float, ...]]:
    """The FishNet backbone of a detector config (all eleven features), and its mean and std."""
    from mmengine.config import Config

    from mmfish.registry import MODELS

    if not osp.isfile(config):
        raise FileNotFoundError(f'--config {config}: no such file')
    cfg = Config.fromfile(config)
    backbone = copy.deepcopy(cfg.model.get('backbone'))
    if backbone is None or backbone.get('type') not in ('FishNet', 'mmdet.FishNet'):
        kind = None if backbone is None else backbone.get('type')
        raise ValueError(f'--config {config}: its backbone is {kind!r}, not FishNet')
    backbone.pop('_delete_', None)
    backbone.update(out_indices=tuple(range(NUM_FEATURES)), out_norm=False, init_cfg=None)
    backbone['type'] = 'FishNet'
    model = MODELS.build(backbone)
    model.init_weights()
    preprocessor = cfg.model.get('data_preprocessor') or {}
    mean = tuple(preprocessor.get('mean', IMAGENET_MEAN))
    std = tuple(preprocessor.get('std', IMAGENET_STD))
    if not preprocessor.get('bgr_to_rgb', True):
        raise ValueError(f'--config {config}: expects BGR input (bgr_to_rgb=False); unsupported')
    return model, mean, std


def read_state_dict(path: str, option: str) -> dict:
    """A checkpoint file's tensors (its ``state_dict`` when it has one), ``module.`` removed.

    Args:
        path: The file.
        option: How the command line named it, for the messages (``--checkpoint PATH``).
    """
    from mmengine.runner.checkpoint import _load_checkpoint

    if not checkpoint_exists(path):
        raise FileNotFoundError(f'{option}: no such file')
    checkpoint = _load_checkpoint(path, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'{option}: not a state dict')
    return dict(strip_module_prefix(state))


def load_backbone_weights(model: nn.Module, path: str) -> int:
    """Load an mmfish-converted file or a detector's ``backbone.*`` weights; count them."""
    state = read_state_dict(path, f'--checkpoint {path}')
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.') :]: v for k, v in state.items() if k.startswith('backbone.')}
    own = model.state_dict()
    matched = [k for k in state if k in own]
    if not matched:
        raise ValueError(
            f'--checkpoint {path}: none of its keys (e.g. {sorted(state)[:3]}) is a FishNet key '
            f"(e.g. {sorted(own)[:3]}): convert an authors' file with "
            f'{tool_command("model_converters/fishnet2mmdet.py")}, or pass a detector checkpoint'
        )
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith('num_batches_tracked')]
    if missing:
        print(
            f'{len(missing)} backbone tensors are not in {path} and keep their initial values '
            f'(e.g. {missing[:4]})',
            file=sys.stderr,
        )
    return len(matched)


def extract(model: FishNet, image: np.ndarray, mean, std) -> List[torch.Tensor]:
    """The eleven features of one RGB image, (C, H, W) each, in eval mode."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
    if len(features) != NUM_FEATURES:
        raise RuntimeError(f'expected {NUM_FEATURES} features, got {len(features)}')
    return [f[0].float().contiguous() for f in features]


def panel_title(index: int, info: dict) -> str:
    """``'7 body.2: 320 ch, stride 4'``."""
    return f'{index} {info["name"]}: {info["channels"]} ch, stride {info["stride"]}'


def draw(
    features: Sequence[torch.Tensor],
    feature_info: Sequence[dict],
    image: np.ndarray,
    reduction: str,
    title: str,
):
    """A matplotlib figure with one panel per feature (eleven axes), titled and laid out."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mmengine.visualization import Visualizer

    h, w = image.shape[:2]
    cols = max(len(r) for r in ROWS)
    panel = 2.6
    fig, axes = plt.subplots(
        len(ROWS), cols, figsize=(cols * panel, len(ROWS) * panel * h / w + 0.6), squeeze=False
    )
    for row, indices in enumerate(ROWS):
        for col in range(cols):
            ax = axes[row][col]
            if col >= len(indices):
                fig.delaxes(ax)
                continue
            index = indices[col]
            # nearest up-sampling to the image: each cell of the feature's grid stays visible
            featmap = F.interpolate(features[index][None], size=(h, w), mode='nearest')[0]
            drawn = Visualizer.draw_featmap(
                featmap, overlaid_image=image, channel_reduction=reduction, alpha=0.5
            )
            ax.imshow(drawn)
            ax.set_title(panel_title(index, feature_info[index]), fontsize=8)
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('image', help='an image file')
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument('--arch', help=f'a FishNet variant: {list(FishNet.arch_settings)}')
    model.add_argument('--config', help='a detector config with a FishNet backbone')
    parser.add_argument('--checkpoint', help='weights: mmfish-converted or a detector file')
    parser.add_argument('--out-dir', required=True, help='writes feature_maps.{png,json} here')
    parser.add_argument(
        '--size', type=int, default=512, help='longer side of the input (default: 512)'
    )
    parser.add_argument(
        '--reduction',
        choices=('squeeze_mean', 'select_max'),
        default='squeeze_mean',
        help="draw_featmap's channel_reduction: mean over channels, or the channel with the "
        'largest mean (default: squeeze_mean)',
    )
    parser.add_argument(
        '--format', choices=('png', 'jpg'), default='png', help='picture format (default: png)'
    )
    parser.add_argument('--dpi', type=int, default=80, help='picture resolution (default: 80)')
    parser.add_argument('--seed', type=int, default=0, help='initialisation (default: 0)')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """Build the model, extract the features, write the picture and its description."""
    if args.size < SIZE_DIVISOR:
        raise ValueError(f'--size {args.size}: use at least {SIZE_DIVISOR}')
    image = read_image(args.image)
    torch.manual_seed(args.seed)
    if args.arch is not None:
        if args.arch not in FishNet.arch_settings:
            raise ValueError(
                f'--arch {args.arch!r}: unknown FishNet variant; valid are '
                f'{list(FishNet.arch_settings)}'
            )
        model = FishNet(args.arch, out_indices=tuple(range(NUM_FEATURES)), out_norm=False)
        model.init_weights()
        mean, std, name = IMAGENET_MEAN, IMAGENET_STD, args.arch
    else:
        model, mean, std = build_from_config(args.config)
        name = f'{osp.basename(args.config)} backbone'
    if args.checkpoint:
        load_backbone_weights(model, args.checkpoint)
        weights = f'weights from {osp.basename(args.checkpoint)}'
    else:
        weights = f'random initialisation (seed {args.seed}), no trained weights'
    resized = resize_to_multiple(image, args.size)
    features = extract(model, resized, mean, std)
    reduction = 'mean over channels' if args.reduction == 'squeeze_mean' else 'strongest channel'
    title = (
        f'{name}, {weights}: features of {osp.basename(args.image)} at '
        f'{resized.shape[0]}x{resized.shape[1]} ({reduction}, min-max per panel)'
    )
    fig = draw(features, model.feature_info, resized, args.reduction, title)
    os.makedirs(args.out_dir, exist_ok=True)
    picture = osp.join(args.out_dir, f'feature_maps.{args.format}')
    # JPEG quality 85: the overlays are photographs, a PNG of them is several times larger.
    fig.savefig(
        picture, dpi=args.dpi, pil_kwargs=dict(quality=85) if args.format == 'jpg' else None
    )
    panels = [
        dict(
            index=i,
            part=model.feature_info[i]['name'],
            channels=model.feature_info[i]['channels'],
            stride=model.feature_info[i]['stride'],
            size=list(features[i].shape[1:]),
            title=ax.get_title(),
        )
        for i, ax in zip(range(NUM_FEATURES), fig.axes)
    ]
    description = dict(
        image=args.image,
        input_size=list(resized.shape[:2]),
        model=name,
        weights=weights,
        reduction=args.reduction,
        picture=picture,
        panels=panels,
    )
    with open(osp.join(args.out_dir, 'feature_maps.json'), 'w') as f:
        json.dump(description, f, indent=1)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f'wrote {picture} ({len(fig.axes)} panels)')
    return description


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f'feature_maps.py: error: {error}')


if __name__ == '__main__':
    main()
