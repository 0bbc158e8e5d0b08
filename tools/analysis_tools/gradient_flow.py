"""Gradient flow: how much of the output's gradient reaches each depth of FishNet and ResNet.

The paper's central claim (Sun et al., NeurIPS 2018) is that FishNet's head, which has no
isolated convolution between resolutions (max pooling, concatenation with transferred features,
channel-wise reduction in the body), lets the gradient from the output reach the shallow layers
directly. This tool measures it on one batch.

Method, for every model named by ``--models``:

- a classifier: a FishNet variant with its 1000-class score head (``FishNet.classify``,
  ``out_norm=False``: the reference network), or mmdet's ``ResNet`` with global average pooling
  and a linear layer (named ``fc``, so torchvision / mmpretrain ResNet files load with
  ``--checkpoint``). Weights: each model's own initialisation after ``torch.manual_seed(seed)``
  (FishNet: the reference's; ResNet: mmdet's, with ``zero_init_residual=False`` so that its
  residual branches do not start at zero and the comparison is of the architectures, not of an
  initialisation trick, and ``norm_eval=False``, mmdet's default being frozen norm statistics
  for fine-tuning), or a checkpoint;
- one batch: ``--batch`` images of ``--shape`` x ``--shape``, standard-normal noise (seeded), or
  the first images of ``--images DIR`` in name order, resized, with ImageNet's mean and std;
  labels drawn at random (seeded); cross-entropy; one backward in train mode (norms use the
  batch's statistics, as in training);
- recorded, ordered from the output back to the stem: the L2 norm of the gradient of the loss
  with respect to every stage's feature (FishNet: its eleven features, stem, tail, bridge, body,
  head; ResNet: stem and the four stages), and the L2 norm of the gradient of every residual
  block's parameters (all of a block's weights together);
- normalised per model: features by the gradient at the output feature (the one the classifier
  reads), blocks by that of the last block the forward pass runs (for ResNet the last block of
  stage 4; for FishNet the last transfer block of the last head stage, concatenated into the
  output feature), so that every curve ends at 1 at the output whatever the network's depth.

``DIR/gradient_flow.json`` holds every figure; ``DIR/gradient_flow.png`` draws them: one line
per model, position in the forward pass on x (0 the stem or first block, 1 the output or last
block), the normalised gradient norm on a log scale on y.

Example (the picture in docs/analysis_tools.md)::

    python tools/analysis_tools/gradient_flow.py --models fishnet99 fishnet150 resnet50 \\
        resnet101 --shape 224 --batch 8 --out-dir work_dirs/gradient_flow
"""

import argparse
import json
import logging
import math
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger

from mmfish.models import FishNet
from mmfish.models.backbones.fish_blocks import PreActBottleneck

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # the sibling feature_maps.py
from feature_maps import IMAGENET_MEAN as MEAN  # noqa: E402
from feature_maps import IMAGENET_STD as STD  # noqa: E402
from feature_maps import read_image, read_state_dict  # noqa: E402

RESNET_DEPTHS = (18, 34, 50, 101, 152)
RESNETS = {f'resnet{d}': d for d in RESNET_DEPTHS}
NUM_CLASSES = 1000
SIZE_DIVISOR = 32
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def known_models() -> Tuple[str, ...]:
    """Every model name ``--models`` accepts: FishNet's variants and mmdet's ResNets."""
    return (*FishNet.arch_settings, *RESNETS)


class ResNetClassifier(nn.Module):
    """mmdet's ResNet with global average pooling and a linear classifier (``fc``)."""

    def __init__(self, depth: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        from mmdet.models.backbones import ResNet

        # mmdet's ResNet defaults to norm_eval=True (frozen statistics, for fine-tuning): a
        # classifier trained from these weights uses the batch's statistics.
        self.backbone = ResNet(depth, out_indices=(3,), zero_init_residual=False, norm_eval=False)
        self.backbone.init_weights()
        self.fc = nn.Linear(self.backbone.feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feature = self.backbone(x)[-1]
        return self.fc(F.adaptive_avg_pool2d(feature, 1).flatten(1))


class Probe:
    """A classifier with the modules whose outputs are its stage features and its blocks.

    Attributes:
        name: The model's name (``'fishnet150'``, ``'resnet50'``).
        model: The classifier module (its parameters are counted and loaded).
        classify: ``x -> logits``.
        stages: ``(feature name, module)`` pairs in forward order; each module's output is
            that stage's feature.
        block_types: Classes of the residual blocks.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        if name in FishNet.arch_settings:
            model = FishNet(name, out_indices=(10,), out_norm=False, num_classes=NUM_CLASSES)
            model.init_weights()
            self.model: nn.Module = model
            self.classify = model.classify
            self.stages = [
                (f'{i}: {info["name"]}', module)
                for i, (info, module) in enumerate(zip(model.feature_info, model.stages()))
            ]
            self.block_types: Tuple[type, ...] = (PreActBottleneck,)
        elif name in RESNETS:
            from mmdet.models.backbones.resnet import BasicBlock, Bottleneck

            model = ResNetClassifier(RESNETS[name])
            self.model = model
            self.classify = model
            backbone = model.backbone
            self.stages = [('stem', backbone.maxpool)] + [
                (layer, getattr(backbone, layer)) for layer in backbone.res_layers
            ]
            self.block_types = (BasicBlock, Bottleneck)
        else:
            raise ValueError(unknown_model_message(name))

    def load(self, path: str) -> Dict[str, int]:
        """Load weights from ``path``: an mmfish / mmdet / torchvision / mmpretrain file.

        Detector files give their ``backbone.*`` weights (the classifier's head stays as
        initialised: say so). Returns how many tensors were loaded and left missing.
        """
        state = read_state_dict(path, f'--checkpoint {self.name}={path}')
        if any(k.startswith('backbone.') for k in state):
            state = {
                (k[len('backbone.') :] if k.startswith('backbone.') else k[len('head.') :]): v
                for k, v in state.items()
                if k.startswith('backbone.') or k.startswith('head.fc.')
            }
        if isinstance(self.model, ResNetClassifier):
            state = {k if k.startswith('fc.') else f'backbone.{k}': v for k, v in state.items()}
        own = self.model.state_dict()
        matched = [k for k in state if k in own]
        if not matched:
            raise ValueError(
                f'--checkpoint {self.name}={path}: none of its {len(state)} keys (e.g. '
                f'{sorted(state)[:3]}) is a {self.name} key (e.g. {sorted(own)[:3]}); is it a '
                'checkpoint of this model?'
            )
        result = self.model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.endswith('num_batches_tracked')]
        if missing:
            print(
                f'{self.name}: {len(missing)} tensors not in {path} keep their initial values '
                f'(e.g. {missing[:4]})',
                file=sys.stderr,
            )
        return dict(loaded=len(matched), missing=len(missing))


def unknown_model_message(name: str) -> str:
    return (
        f'unknown model {name!r}: --models takes names from {list(known_models())} '
        '(FishNet variants and mmdet ResNets)'
    )


def parse_checkpoints(pairs: Sequence[str], models: Sequence[str]) -> Dict[str, str]:
    """``['fishnet150=a.pth']`` -> ``{'fishnet150': 'a.pth'}``, each name one of ``models``."""
    checkpoints = {}
    for pair in pairs:
        name, sep, path = pair.partition('=')
        if not sep or not path:
            raise ValueError(f'--checkpoint {pair!r}: use MODEL=PATH, e.g. fishnet150=f150.pth')
        if name not in models:
            raise ValueError(f'--checkpoint {pair!r}: {name!r} is not among --models {models}')
        checkpoints[name] = path
    return checkpoints


def load_images(directory: str, batch: int, shape: int) -> Tuple[torch.Tensor, List[str]]:
    """The first ``batch`` images of ``directory`` (name order), resized and normalised."""
    import mmcv

    if not osp.isdir(directory):
        raise FileNotFoundError(f'--images {directory}: no such directory')
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f'--images {directory}: no image files ({", ".join(IMAGE_EXTENSIONS)})')
    if len(names) < 2:
        raise ValueError(
            f'--images {directory}: {len(names)} image; the batch needs at least 2 (train-mode '
            'batch norm)'
        )
    names = names[:batch]
    images = []
    for name in names:
        path = osp.join(directory, name)
        image = read_image(path)
        image = mmcv.imresize(image, (shape, shape))
        images.append(torch.from_numpy(image).permute(2, 0, 1).float())
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (torch.stack(images) - mean) / std, names


def measure(probe: Probe, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """One forward and backward; the gradient norms of features and blocks, output first."""
    features: List[Tuple[str, torch.Tensor]] = []
    blocks: List[nn.Module] = []
    handles = []
    for name, module in probe.stages:

        def keep(module, args, output, name=name):
            output.retain_grad()
            features.append((name, output))

        handles.append(module.register_forward_hook(keep))
    names = {module: name for name, module in probe.model.named_modules()}
    for module in names:
        if isinstance(module, probe.block_types):
            handles.append(module.register_forward_hook(lambda m, a, o: blocks.append(m)))
    probe.model.train()
    probe.model.zero_grad(set_to_none=True)
    try:
        loss = F.cross_entropy(probe.classify(images), labels)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    if len(set(map(id, blocks))) != len(blocks):
        raise RuntimeError(f'{probe.name}: a residual block ran twice; depth is ambiguous')

    feature_rows = []
    for position, (name, feature) in enumerate(features):
        feature_rows.append(
            dict(
                name=name,
                position=position,
                shape=list(feature.shape[1:]),
                grad_norm=float(feature.grad.norm()),
            )
        )
    block_rows = []
    for position, block in enumerate(blocks):
        grads = [p.grad for p in block.parameters() if p.grad is not None]
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        block_rows.append(dict(name=names[block], position=position, grad_norm=norm))
    return dict(
        params=sum(p.numel() for p in probe.model.parameters()),
        loss=loss.item(),
        features=normalise(feature_rows),
        blocks=normalise(block_rows),
    )


def normalise(rows: List[dict]) -> List[dict]:
    """Rows from the output back: relative to the last row (the output), depth in [0, 1]."""
    last = rows[-1]['grad_norm']
    for row in rows:
        row['depth'] = row['position'] / max(1, len(rows) - 1)
        row['relative'] = row['grad_norm'] / last if last > 0 else float('nan')
    return rows[::-1]


def plot(results: Dict[str, dict], path: str, title: str) -> None:
    """One line per model: features (left) and blocks (right), depth on x, log y."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        ('features', 'stage features: |dL/dF| / |dL/dF| at the output'),
        ('blocks', "residual blocks' weights: |dL/dW| / that of the last block"),
    )
    for ax, (key, label) in zip(axes, panels):
        for model, result in results.items():
            rows = result[key][::-1]
            ax.plot(
                [r['depth'] for r in rows],
                [r['relative'] for r in rows],
                marker='o' if key == 'features' else '.',
                markersize=4 if key == 'features' else 3,
                linewidth=1.2,
                label=f'{model} ({len(rows)})',
            )
        ax.set_yscale('log')
        ax.set_xlabel('position in the forward pass (0: stem / first block, 1: output)')
        ax.set_title(label, fontsize=10)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--models',
        nargs='+',
        default=['fishnet99', 'fishnet150', 'resnet50', 'resnet101'],
        help='FishNet variants and mmdet ResNets (resnet18 ... resnet152) (default: %(default)s)',
    )
    parser.add_argument(
        '--shape', type=int, default=224, help='input size, a multiple of 32 (default: 224)'
    )
    parser.add_argument('--batch', type=int, default=8, help='batch size (default: 8)')
    parser.add_argument('--out-dir', required=True, help='writes gradient_flow.{json,png} here')
    parser.add_argument(
        '--checkpoint',
        nargs='+',
        default=[],
        metavar='MODEL=PATH',
        help='weights for some of the models (mmfish-converted, detector, torchvision files)',
    )
    parser.add_argument(
        '--images', help='a folder of images for the batch (default: generated noise)'
    )
    parser.add_argument('--seed', type=int, default=0, help='images, labels, init (default: 0)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch default)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f'gradient_flow.py: error: {error}')


def run(args: argparse.Namespace) -> Dict[str, dict]:
    """Check the arguments, measure every model, write the JSON and the PNG."""
    for name in args.models:
        if name not in known_models():
            raise ValueError(unknown_model_message(name))
    if len(set(args.models)) != len(args.models):
        raise ValueError(f'--models {args.models} names a model twice')
    if args.shape < SIZE_DIVISOR or args.shape % SIZE_DIVISOR:
        raise ValueError(f'--shape {args.shape}: use a positive multiple of {SIZE_DIVISOR}')
    if args.batch < 2:
        raise ValueError(f'--batch {args.batch}: use at least 2 (train-mode batch norm)')
    checkpoints = parse_checkpoints(args.checkpoint, args.models)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every tensor
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    if args.images:
        images, image_names = load_images(args.images, args.batch, args.shape)
        source = f'{len(image_names)} images from {args.images}: {image_names}'
    else:
        images = torch.randn(args.batch, 3, args.shape, args.shape, generator=generator)
        source = f'standard-normal noise, seed {args.seed}'
    labels = torch.randint(0, NUM_CLASSES, (len(images),), generator=generator)

    results: Dict[str, dict] = {}
    for name in args.models:
        torch.manual_seed(args.seed)
        probe = Probe(name)
        loaded = probe.load(checkpoints[name]) if name in checkpoints else None
        result = measure(probe, images, labels)
        result['checkpoint'] = checkpoints.get(name)
        result['loaded'] = loaded
        results[name] = result
        stem, first = result['features'][-1], result['blocks'][-1]
        print(
            f'{name:12s} params {result["params"]:>11,}  loss {result["loss"]:.3f}  '
            f'stem feature {stem["relative"]:.3g}  first block {first["relative"]:.3g}  '
            f'(of the output\'s; {len(result["blocks"])} blocks)'
        )

    os.makedirs(args.out_dir, exist_ok=True)
    summary = dict(
        command='python tools/analysis_tools/gradient_flow.py ' + ' '.join(sys.argv[1:]),
        shape=args.shape,
        batch=len(images),
        input=source,
        labels=f'uniform over {NUM_CLASSES} classes, seed {args.seed}',
        loss='cross-entropy, mean over the batch; one backward in train mode',
        grad_norm="L2 norm over the whole batch (features) or all of a block's parameters",
        normalisation='features by the output feature; blocks by the last block run',
        order='rows from the output back to the stem; depth = forward position / (n - 1)',
        torch=torch.__version__,
        models=results,
    )
    json_path = osp.join(args.out_dir, 'gradient_flow.json')
    with open(json_path, 'w') as f:
        json.dump(summary, f, indent=1)
    png_path = osp.join(args.out_dir, 'gradient_flow.png')
    inits = ', '.join(f'{m}: {"checkpoint" if m in checkpoints else "init"}' for m in results)
    plot(
        results,
        png_path,
        f'Gradient norms, one batch of {len(images)} at {args.shape}x{args.shape} '
        f'({"images" if args.images else "noise"}, random labels); {inits}',
    )
    print(f'wrote {json_path} and {png_path}')
    return results


if __name__ == '__main__':
    main()
