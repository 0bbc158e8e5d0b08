"""Make the fixtures that prove mmfish's FishNet computes what the authors' FishNet computes.

For each variant (fishnet99, fishnet150, fishnet201) this script builds the *reference*
network (github kevin-ssy/FishNet, imported at run time from ``--reference-root``; no reference
code lives in this repository), fills every tensor of its ``state_dict`` from a seeded
:func:`numpy.random.default_rng` (see :func:`seeded_state_dict`), runs a fixed random input in
eval mode and saves, under ``--out``:

- ``input.npy``: the input, float32, shape ``INPUT_SHAPE``;
- ``<variant>_keys.json``: the reference's ``state_dict`` layout (key, shape, dtype, in the
  reference's order), the seed, a checksum of the seeded weights and the output shapes;
- ``<variant>_outputs.npz``: features 7, 8, 9, 10 (``feat7`` .. ``feat10``, float32) and
  the logits (``logits``).

The weights themselves are not stored: the test rebuilds the reference-format checkpoint from
the JSON and the seed with :func:`seeded_state_dict` (this module imports nothing from the
reference at import time), converts it with ``tools/model_converters/fishnet2mmdet.py``, loads
it into mmfish's ``FishNet`` and compares the outputs.

Usage::

    python tools/dev/make_reference_fixtures.py --reference-root /work/ref/FishNet \
        --out tests/fixtures/reference
"""

import argparse
import datetime
import importlib
import json
import math
import os
import sys
import types
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

VARIANTS: Tuple[str, ...] = ('fishnet99', 'fishnet150', 'fishnet201')
# One seed per variant (its depth), and one for the input.
SEEDS: Dict[str, int] = {'fishnet99': 99, 'fishnet150': 150, 'fishnet201': 201}
INPUT_SEED = 2018
INPUT_SHAPE: Tuple[int, ...] = (1, 3, 64, 96)
# Features of the reference's ``all_feat`` list stored (feature i + 1 = output of fish stage i).
FEATURES: Tuple[int, ...] = (7, 8, 9, 10)
# He-style convolution weights, scaled down (CONV_GAIN for all, RESIDUAL_GAIN more for the last
# convolution of each residual branch) so that features stay O(1) through the ~200 layers in
# eval mode: the running statistics are random, so the norms do not re-normalise, and every
# 2x2 max pool raises the second moment. With these values the standard deviations of all
# eleven features lie between 0.5 and 4 for the three variants.
CONV_GAIN = 0.75
RESIDUAL_GAIN = 0.5
FILL_RULE = (
    'keys in sorted order, one draw each from numpy.random.default_rng(seed): '
    'num_batches_tracked = integers(0, 10000); running_var = 0.5 + random(); '
    'running_mean = 0.1 * standard_normal(); 1-D weight (norm) = 0.5 + random(); '
    'bias = 0.1 * standard_normal(); 4-D weight (conv) = standard_normal() * '
    f'{CONV_GAIN} * sqrt(2 / fan_in), times {RESIDUAL_GAIN} more for "*.conv3.weight"; '
    'drawn in float64, stored as float32'
)


def seeded_state_dict(layout: Sequence[Sequence], seed: int) -> 'OrderedDict[str, torch.Tensor]':
    """Fill a state dict of the given layout deterministically (see ``FILL_RULE``).

    Args:
        layout: ``(key, shape, dtype)`` triples, dtype ``'float32'`` or ``'int64'``; the
            result keeps this order, the values are drawn in sorted key order.
        seed: Seed of :func:`numpy.random.default_rng`.

    Returns:
        The state dict, float32 tensors (int64 for ``num_batches_tracked``).
    """
    rng = np.random.default_rng(seed)
    values: Dict[str, np.ndarray] = {}
    specs = {key: (tuple(shape), dtype) for key, shape, dtype in layout}
    for key in sorted(specs):
        shape, dtype = specs[key]
        leaf = key.rsplit('.', 1)[-1]
        if leaf == 'num_batches_tracked':
            value = rng.integers(0, 10000, size=shape).astype(np.int64)
        elif leaf == 'running_var':
            value = 0.5 + rng.random(shape)
        elif leaf == 'running_mean':
            value = 0.1 * rng.standard_normal(shape)
        elif leaf == 'weight' and len(shape) == 1:
            value = 0.5 + rng.random(shape)
        elif leaf == 'bias':
            value = 0.1 * rng.standard_normal(shape)
        elif leaf == 'weight' and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            gain = CONV_GAIN * (RESIDUAL_GAIN if key.endswith('.conv3.weight') else 1.0)
            value = rng.standard_normal(shape) * (gain * math.sqrt(2.0 / fan_in))
        else:
            raise ValueError(f'no fill rule for {key} of shape {shape}')
        expected_dtype = np.int64 if dtype == 'int64' else np.float32
        values[key] = np.array(value, dtype=expected_dtype, order='C')  # keeps 0-d shapes
        if values[key].shape != shape:
            raise RuntimeError(f'{key}: filled shape {values[key].shape}, layout {shape}')
    return OrderedDict((key, torch.from_numpy(values[key])) for key, _, _ in layout)


def checksum(state_dict: Dict[str, torch.Tensor]) -> List[float]:
    """Sum and sum of absolute values of every tensor, in float64: detects a changed RNG."""
    total, total_abs = 0.0, 0.0
    for value in state_dict.values():
        value = value.double()
        total += float(value.sum())
        total_abs += float(value.abs().sum())
    return [total, total_abs]


def seeded_input(shape: Sequence[int] = INPUT_SHAPE, seed: int = INPUT_SEED) -> np.ndarray:
    """The fixed input: standard normal float32 from ``default_rng(seed)``."""
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(np.float32)


def import_reference(reference_root: str) -> types.ModuleType:
    """Import the reference's ``models/net_factory.py`` without its ``models/__init__.py``.

    The reference package's ``__init__`` imports torchvision, which the network does not use;
    a bare package object pointing at ``models/`` lets ``net_factory`` and its relative imports
    load without it.
    """
    models_dir = os.path.join(os.path.abspath(reference_root), 'models')
    if not os.path.isfile(os.path.join(models_dir, 'net_factory.py')):
        raise FileNotFoundError(
            f'{models_dir}/net_factory.py not found: is --reference-root right?'
        )
    package = types.ModuleType('_fishnet_reference')
    package.__path__ = [models_dir]
    sys.modules['_fishnet_reference'] = package
    return importlib.import_module('_fishnet_reference.net_factory')


@torch.no_grad()
def reference_outputs(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, np.ndarray]:
    """Run the reference network, keeping its intermediate features.

    Mirrors ``FishNet.forward`` of the reference (stem, then ``Fish._fish_forward`` on a
    feature list that we own, so features 7..10 can be read back), and checks the logits
    against a plain ``model(x)``.
    """
    fish = model.fish
    stem = model.pool1(model.conv3(model.conv2(model.conv1(x))))
    all_feat = [None] * (fish.depth + 1)
    all_feat[0] = stem
    score = fish._fish_forward(all_feat)
    logits = score.view(x.size(0), -1)
    direct = model(x)
    if not torch.equal(direct, logits):
        raise RuntimeError('reference logits differ between model(x) and the traced forward')
    outputs = {f'feat{i}': all_feat[i].clone().numpy() for i in FEATURES}
    outputs['logits'] = logits.numpy()
    return outputs


def make_variant(factory: types.ModuleType, variant: str, x: torch.Tensor, out: str) -> Dict:
    """Build, seed and run one reference variant; write its JSON and npz; return a summary."""
    model = getattr(factory, variant)()
    reference_sd = model.state_dict()
    layout = [
        [key, list(value.shape), 'int64' if value.dtype == torch.int64 else 'float32']
        for key, value in reference_sd.items()
    ]
    for key, value in reference_sd.items():
        if value.dtype not in (torch.float32, torch.int64):
            raise RuntimeError(f'unexpected dtype {value.dtype} for {key}')
    seeded = seeded_state_dict(layout, SEEDS[variant])
    model.load_state_dict(seeded, strict=True)
    model.eval()
    outputs = reference_outputs(model, x)
    for name, value in outputs.items():
        if not np.isfinite(value).all():
            raise RuntimeError(f'{variant}: non-finite values in {name}')
    info = OrderedDict(
        variant=variant,
        seed=SEEDS[variant],
        fill_rule=FILL_RULE,
        checksum=checksum(seeded),
        num_tensors=len(layout),
        num_elements=int(sum(int(np.prod(shape)) for _, shape, _ in layout)),
        outputs={name: list(value.shape) for name, value in outputs.items()},
        output_std={name: float(value.std()) for name, value in outputs.items()},
        layout=layout,
    )
    write_json(info, os.path.join(out, f'{variant}_keys.json'))
    np.savez_compressed(os.path.join(out, f'{variant}_outputs.npz'), **outputs)
    return info


def write_json(info: Dict, path: str) -> None:
    """Write ``info`` as indented JSON, with one line per ``layout`` entry (diff-friendly)."""
    head = json.dumps({k: v for k, v in info.items() if k != 'layout'}, indent=1)
    text = head
    if 'layout' in info:
        rows = ',\n'.join('  ' + json.dumps(row) for row in info['layout'])
        text = head[: -len('\n}')] + ',\n "layout": [\n' + rows + '\n ]\n}'
    with open(path, 'w') as f:
        f.write(text + '\n')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--reference-root', required=True, help='checkout of kevin-ssy/FishNet')
    parser.add_argument('--out', default='tests/fixtures/reference', help='output folder')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)  # the reference initialises its weights randomly before we overwrite
    torch.set_num_threads(min(2, torch.get_num_threads()))
    factory = import_reference(args.reference_root)
    os.makedirs(args.out, exist_ok=True)
    x_np = seeded_input()
    np.save(os.path.join(args.out, 'input.npy'), x_np)
    x = torch.from_numpy(x_np)
    summary = OrderedDict(
        torch=torch.__version__,
        numpy=np.__version__,
        date=datetime.date.today().isoformat(),
        input_shape=list(INPUT_SHAPE),
        input_seed=INPUT_SEED,
        features=list(FEATURES),
    )
    for variant in args.variants:
        info = make_variant(factory, variant, x, args.out)
        print(
            f'{variant}: {info["num_tensors"]} tensors, {info["num_elements"]} elements, '
            f'output std {info["output_std"]}'
        )
    write_json(summary, os.path.join(args.out, 'meta.json'))


if __name__ == '__main__':
    main()
