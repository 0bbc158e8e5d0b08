"""The key grammar of the authors' FishNet checkpoints, and its map onto mmfish's names.

The reference checkpoints (github kevin-ssy/FishNet: ``fishnet99_ckpt.tar``,
``fishnet150_ckpt.tar``) hold a ``state_dict`` whose keys carry a ``module.`` prefix (saved from
``DataParallel``). The reference numbers its modules by position; :func:`map_key` maps every key
onto :class:`mmfish.models.FishNet`'s names:

======================================  ==========================================
reference (``module.`` stripped)        mmfish
======================================  ==========================================
``conv{1,2,3}.{0,1}``                   ``stem.{0,1}``, ``stem.{3,4}``, ``stem.{6,7}``
``fish.fish.{0-2}.0.{j}``               ``tail.{0-2}.blocks.{j}``
``fish.fish.3.0.{0,2,3}``               ``bridge.squeeze.{0,2,3}``
``fish.fish.3.1``                       ``bridge.squeeze.5``
``fish.fish.3.2.{j}``                   ``bridge.blocks.{j}``
``fish.fish.3.3.0.{0,3,5}``             ``bridge.attention.{0,3,5}``
``fish.fish.{4-6}.{0,1}.{j}``           ``body.{0-2}.{blocks,transfer}.{j}``
``fish.fish.{7-9}.{0,1}.{j}``           ``head.{0-2}.{blocks,transfer}.{j}``
``fish.fish.9.3.{0,2,3}``               ``score.conv.{0,2,3}``
``fish.fish.9.4.1``                     ``score.fc``
======================================  ==========================================

and inside a residual block ``bn{1,2,3}`` -> ``norm{1,2,3}``, ``conv{1,2,3}`` -> ``conv{1,2,3}``,
``shortcut.{0,2}`` -> ``projection.{0,2}``. :func:`reference_names` is the inverse for one
variant, :func:`expected_shapes` the keys and shapes that variant has in mmfish.
"""

import re
from collections import OrderedDict
from functools import cache
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from mmfish.models.backbones.fishnet import NORM_STATE, FishNet
from mmfish.models.backbones.variants import ARCH_SETTINGS
from mmfish.utils.errors import listing

MAX_LISTED = 20  # keys listed in full in an error message

# The leaves of a key: a conv's weight (and bias), a norm's state.
LEAF = '(' + '|'.join(NORM_STATE) + ')'
STEM_RE = re.compile(r'^conv([123])\.([01])\.' + LEAF + '$')
BLOCK_RE = re.compile(
    r'^fish\.fish\.(\d+)\.(\d+)\.(\d+)\.(bn[123]|conv[123]|shortcut\.[02])\.' + LEAF + '$'
)
_BLOCK_PARTS = {
    'bn1': 'norm1',
    'conv1': 'conv1',
    'bn2': 'norm2',
    'conv2': 'conv2',
    'bn3': 'norm3',
    'conv3': 'conv3',
    'shortcut.0': 'projection.0',
    'shortcut.2': 'projection.2',
}
# Fixed (non-block) layers: reference module -> mmfish module.
_FIXED = {
    'fish.fish.3.0.0': 'bridge.squeeze.0',
    'fish.fish.3.0.2': 'bridge.squeeze.2',
    'fish.fish.3.0.3': 'bridge.squeeze.3',
    'fish.fish.3.1': 'bridge.squeeze.5',
    'fish.fish.3.3.0.0': 'bridge.attention.0',
    'fish.fish.3.3.0.3': 'bridge.attention.3',
    'fish.fish.3.3.0.5': 'bridge.attention.5',
    'fish.fish.9.3.0': 'score.conv.0',
    'fish.fish.9.3.2': 'score.conv.2',
    'fish.fish.9.3.3': 'score.conv.3',
    'fish.fish.9.4.1': 'score.fc',
}
_FIXED_RE = re.compile(
    '^('
    + '|'.join(re.escape(k) for k in sorted(_FIXED, key=len, reverse=True))
    + r')\.'
    + LEAF
    + '$'
)


def key_listing(keys: Sequence[str]) -> str:
    """How many keys, and the first :data:`MAX_LISTED` of them, for an error message."""
    return listing(keys, MAX_LISTED, noun='key')


def map_key(key: str) -> Optional[str]:
    """The mmfish name of a reference key (``module.`` already stripped), or None."""
    match = STEM_RE.match(key)
    if match:
        conv, slot, leaf = match.groups()
        return f'stem.{3 * (int(conv) - 1) + int(slot)}.{leaf}'
    match = BLOCK_RE.match(key)
    if match:
        stage, slot, block, part, leaf = match.groups()
        stage, slot = int(stage), int(slot)
        if stage <= 2 and slot == 0:
            module = f'tail.{stage}.blocks'
        elif stage == 3 and slot == 2:
            module = 'bridge.blocks'
        elif 4 <= stage <= 9 and slot in (0, 1):
            part_name = 'body' if stage <= 6 else 'head'
            module = f'{part_name}.{(stage - 4) % 3}.{("blocks", "transfer")[slot]}'
        else:
            return None
        return f'{module}.{block}.{_BLOCK_PARTS[part]}.{leaf}'
    match = _FIXED_RE.match(key)
    if match:
        module, leaf = match.groups()
        return f'{_FIXED[module]}.{leaf}'
    return None


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Remove the ``module.`` prefix that ``DataParallel`` adds, where present."""
    return OrderedDict(
        (key[len('module.') :] if key.startswith('module.') else key, value)
        for key, value in state_dict.items()
    )


@cache
def expected_shapes(arch: str, num_classes: Optional[int]) -> 'OrderedDict[str, Tuple[int, ...]]':
    """Keys and shapes of ``FishNet(arch, out_norm=False, num_classes=...)`` (built on 'meta')."""
    with torch.device('meta'):
        model = FishNet(
            arch=arch, out_indices=(7, 8, 9, 10), out_norm=False, num_classes=num_classes
        )
    return OrderedDict((key, tuple(value.shape)) for key, value in model.state_dict().items())


def reference_names(arch: str) -> Dict[str, str]:
    """mmfish key -> reference key (without ``module.``) for one variant."""
    settings = ARCH_SETTINGS[arch]
    names: List[str] = [
        f'conv{c}.{s}.{leaf}'
        for c in (1, 2, 3)
        for s, leaves in ((0, ('weight',)), (1, NORM_STATE))
        for leaf in leaves
    ]
    block_leaves = [
        f'{part}.{leaf}'
        for part in ('bn1', 'conv1', 'bn2', 'conv2', 'bn3', 'conv3', 'shortcut.0', 'shortcut.2')
        for leaf in (NORM_STATE if part.startswith(('bn', 'shortcut.0')) else ('weight',))
    ]
    stages = [(s, 0, n) for s, n in enumerate(settings['tail_blocks'])]
    stages.append((3, 2, settings['bridge_blocks']))
    for offset, kind in ((4, 'body'), (7, 'head')):
        for i in range(3):
            stages.append((offset + i, 0, settings[f'{kind}_blocks'][i]))
            stages.append((offset + i, 1, settings[f'{kind}_transfer_blocks'][i]))
    for stage, slot, count in stages:
        for block in range(count):
            names += [f'fish.fish.{stage}.{slot}.{block}.{leaf}' for leaf in block_leaves]
    for module in _FIXED:
        names += [f'{module}.{leaf}' for leaf in NORM_STATE]
    table = {}
    for name in names:
        new = map_key(name)
        if new is not None:
            table[new] = name
    return table


__all__ = [
    'BLOCK_RE',
    'MAX_LISTED',
    'STEM_RE',
    'expected_shapes',
    'key_listing',
    'map_key',
    'reference_names',
    'strip_module_prefix',
]
