"""Key layouts of FishNet weights other than the reference code's, mapped onto it exactly.

:mod:`mmfish.models.converters.convert` converts state dicts in the layout of the authors' code
(github kevin-ssy/FishNet). This module recognises two other layouts of the same network and
renames them into that one, before the conversion:

``'reference'``
    The authors' code and its plain files (``fishnet99_ckpt.tar``, ``fishnet150_ckpt.tar``).
    Passed through unchanged.
``'welltrained'``
    The authors' "well-trained" FishNet-150 file (``fishnet150_ckpt_welltrained.tar``). It
    groups the layers of the bridge's squeeze and of the score head differently, so six modules
    have other names (:data:`WELLTRAINED_RENAMES`). The renames are those of a published
    third-party loader (lyakaap/Landmark2019-1st-and-3rd-Place-Solution,
    ``src/FishNet/fix_checkpoint.py``, which then loads the file *strictly* into the reference
    network); they have not been checked against the original file here.
``'pytorchcv'``
    ``pytorchcv`` (imgclsmob) ``fishnet99`` / ``fishnet150`` state dicts
    (``features.init_block.*``, ``features.hg.*``, ``features.final_block.*``,
    ``output.final_conv.*``): the same network under its own module names.

Each of the two is a function from a reference key to the key of the same tensor in that
layout (:func:`layout_key`); applied to every key of a variant, it gives a one-to-one table
(:func:`layout_table`). A state dict in that layout is renamed only if its keys are exactly one
variant's table (``num_batches_tracked`` may be absent, as in files of PyTorch < 0.4.1; the
score head may be absent) and every tensor has the reference's shape; anything else raises a
:class:`~mmfish.models.converters.errors.FishNetConversionError` naming the keys at fault in the
file's own names. Nothing is loaded partially.

Refused on purpose: the well-trained FishNet-201 file (``fishnet201_ckpt_welltrain.tar``). The
same loader maps it with other renames and loads it non-strictly, so its key set is not known to
map one to one; its first block's shortcut is a bare convolution
(``fish.fish.0.0.0.shortcut.weight``) where the reference has norm, ReLU and convolution; and its
renames, in the order written, overwrite ``fish.fish.9.3.0.weight`` before moving it.
"""

import re
from collections import OrderedDict
from functools import cache
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from mmfish.models.backbones.variants import REFERENCE_ARCHS

from .errors import MissingKeyError, NotFishNetCheckpointError, ShapeMismatchError, UnplacedKeyError
from .keys import (
    BLOCK_RE,
    STEM_RE,
    expected_shapes,
    key_listing,
    map_key,
    reference_names,
    strip_module_prefix,
)

LAYOUTS: Tuple[str, ...] = ('reference', 'welltrained', 'pytorchcv')
LAYOUT_NAMES: Dict[str, str] = {
    'reference': "the authors' reference layout (fishnetXX_ckpt.tar)",
    'welltrained': 'the authors\' "well-trained" layout (fishnet150_ckpt_welltrained.tar; '
    'key renames from a third-party loader)',
    'pytorchcv': "pytorchcv's (imgclsmob) layout",
}

# Well-trained module -> reference module (lyakaap/Landmark2019-1st-and-3rd-Place-Solution,
# src/FishNet/fix_checkpoint.py, FishNet-150 part). The reference's stage 3 starts with
# squeeze = (BN, ReLU, conv 512->256, BN, ReLU) and a conv 256->1024; the well-trained file
# splits them as (BN, ReLU) and (conv, BN, ReLU, conv). Its stage 9 ends with (BN, ReLU) and
# (conv 2112->1056, BN, ReLU, pool, classifier) where the reference has (BN, ReLU, conv, BN, ReLU)
# and (pool, classifier).
WELLTRAINED_RENAMES: Tuple[Tuple[str, str], ...] = (
    ('fish.fish.3.1.0', 'fish.fish.3.0.2'),  # bridge squeeze conv 512 -> 256
    ('fish.fish.3.1.1', 'fish.fish.3.0.3'),  # its norm
    ('fish.fish.3.1.3', 'fish.fish.3.1'),  # conv 256 -> 1024, with bias
    ('fish.fish.9.4.0', 'fish.fish.9.3.2'),  # score conv 2112 -> 1056
    ('fish.fish.9.4.1', 'fish.fish.9.3.3'),  # its norm
    ('fish.fish.9.4.4', 'fish.fish.9.4.1'),  # classifier (1x1 conv, bias)
)
_WELLTRAINED_BY_REFERENCE = {ref: src for src, ref in WELLTRAINED_RENAMES}
# Keys that only the well-trained layout has (fish.fish.9.4.1.weight/bias exist in both).
_WELLTRAINED_RE = re.compile(
    r'^fish\.fish\.(3\.1\.\d+\.|9\.4\.[0234]\.|9\.4\.1\.(running_mean|running_var|'
    r'num_batches_tracked)$)'
)
# Keys of the FishNet-201 well-trained file as that loader describes it (refused).
_WELLTRAINED_201_RE = re.compile(
    r'^fish\.fish\.(\d+\.\d+\.\d+\.shortcut\.(weight|bias)$|9\.2\.\d+\.|9\.3\.[14]\.)'
)

# pytorchcv's FishNet: features.init_block (stem), features.hg (an hourglass of down1_seq = tail,
# skip1_seq = body transfers + bridge, up_seq = body, skip2_seq = head transfers, down2_seq =
# head), features.final_block + output.final_conv (score). Reference stage -> pytorchcv unit.
_PYTORCHCV_BLOCKS: Dict[Tuple[int, int], str] = {
    (0, 0): 'down1_seq.unit1',
    (1, 0): 'down1_seq.unit2',
    (2, 0): 'down1_seq.unit3',
    (3, 2): 'skip1_seq.unit4',  # bridge blocks
    (4, 0): 'up_seq.unit1',
    (5, 0): 'up_seq.unit2',
    (6, 0): 'up_seq.unit3',
    (4, 1): 'skip1_seq.unit3',  # body transfers: of features 2, 1, 0
    (5, 1): 'skip1_seq.unit2',
    (6, 1): 'skip1_seq.unit1',
    (7, 0): 'down2_seq.unit1',
    (8, 0): 'down2_seq.unit2',
    (9, 0): 'down2_seq.unit3',
    (7, 1): 'skip2_seq.unit3',  # head transfers: of features 6, 5, 4
    (8, 1): 'skip2_seq.unit2',
    (9, 1): 'skip2_seq.unit1',
}
_PYTORCHCV_BLOCK_PARTS: Dict[str, str] = {
    'bn1': 'body.conv1.bn',
    'conv1': 'body.conv1.conv',
    'bn2': 'body.conv2.bn',
    'conv2': 'body.conv2.conv',
    'bn3': 'body.conv3.bn',
    'conv3': 'body.conv3.conv',
    'shortcut.0': 'identity_conv.bn',
    'shortcut.2': 'identity_conv.conv',
}
_PYTORCHCV_FIXED: Dict[str, str] = {
    'fish.fish.3.0.0': 'features.hg.skip1_seq.unit4.conv1.bn',
    'fish.fish.3.0.2': 'features.hg.skip1_seq.unit4.conv1.conv',
    'fish.fish.3.0.3': 'features.hg.skip1_seq.unit4.conv2.bn',
    'fish.fish.3.1': 'features.hg.skip1_seq.unit4.conv2.conv',
    'fish.fish.3.3.0.0': 'features.hg.skip1_seq.unit4.se.bn',
    'fish.fish.3.3.0.3': 'features.hg.skip1_seq.unit4.se.conv1',
    'fish.fish.3.3.0.5': 'features.hg.skip1_seq.unit4.se.conv2',
    'fish.fish.9.3.0': 'features.final_block.conv1.bn',
    'fish.fish.9.3.2': 'features.final_block.conv1.conv',
    'fish.fish.9.3.3': 'features.final_block.preactiv.bn',
    'fish.fish.9.4.1': 'output.final_conv',
}


def _split(key: str) -> Tuple[str, str]:
    module, _, leaf = key.rpartition('.')
    return module, leaf


def layout_key(layout: str, reference_key: str) -> str:
    """The name, in ``layout``, of the tensor called ``reference_key`` by the reference code.

    Args:
        layout: One of :data:`LAYOUTS`.
        reference_key: A key of the reference's state dict (no ``module.`` prefix).

    Raises:
        ValueError: an unknown layout, or a key that is not the reference's.
    """
    if layout == 'reference':
        return reference_key
    module, leaf = _split(reference_key)
    if layout == 'welltrained':
        return f'{_WELLTRAINED_BY_REFERENCE.get(module, module)}.{leaf}'
    if layout != 'pytorchcv':
        raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
    match = STEM_RE.match(reference_key)
    if match:
        conv, slot, leaf = match.groups()
        return f'features.init_block.conv{conv}.{("conv", "bn")[int(slot)]}.{leaf}'
    match = BLOCK_RE.match(reference_key)
    if match:
        stage, slot, block, part, leaf = match.groups()
        unit = _PYTORCHCV_BLOCKS.get((int(stage), int(slot)))
        if unit is not None:
            part_name = _PYTORCHCV_BLOCK_PARTS[part]
            return f'features.hg.{unit}.blocks.block{int(block) + 1}.{part_name}.{leaf}'
    if module in _PYTORCHCV_FIXED:
        return f'{_PYTORCHCV_FIXED[module]}.{leaf}'
    raise ValueError(f'{reference_key!r} is not a key of the reference FishNet')


@cache
def layout_table(layout: str, arch: str) -> 'OrderedDict[str, str]':
    """Every key of variant ``arch`` in ``layout`` -> its reference key, in mmfish's order.

    One to one by construction (checked); ``num_batches_tracked`` keys included.
    """
    names = reference_names(arch)
    table: OrderedDict[str, str] = OrderedDict()
    for mmfish_key in expected_shapes(arch, 1000):
        reference_key = names[mmfish_key]
        table[layout_key(layout, reference_key)] = reference_key
    if len(table) != len(expected_shapes(arch, 1000)):
        raise RuntimeError(f'the {layout} names of {arch} are not one to one')  # a bug here
    return table


def detect_layout(state_dict: Mapping[str, object]) -> str:
    """The layout of a state dict (``module.`` prefixes ignored), from its key names.

    ``'pytorchcv'`` when every key is under ``features.`` or ``output.``; ``'welltrained'``
    when a key exists only in that layout; ``'reference'`` otherwise (the converter then says
    whether it is a FishNet at all).

    Raises:
        UnplacedKeyError: keys of the well-trained FishNet-201 file as the third-party loader
            describes it; that layout cannot be mapped exactly (see the module docstring).
    """
    keys = [key[len('module.') :] if key.startswith('module.') else key for key in state_dict]
    if keys and all(key.startswith(('features.', 'output.')) for key in keys):
        return 'pytorchcv'
    welltrained_201 = [key for key in keys if _WELLTRAINED_201_RE.match(key)]
    if welltrained_201:
        raise UnplacedKeyError(
            f"Cannot place {key_listing(welltrained_201)}. These are the keys of the authors' "
            '"well-trained" FishNet-201 file (fishnet201_ckpt_welltrain.tar), which is not '
            'supported: the only published mapping of it (a third-party loader) loads it '
            'non-strictly, its first shortcut is a bare convolution where the reference has '
            'norm, ReLU and convolution, and its renames contradict each other, so it cannot '
            'be mapped exactly. Use the plain fishnet201_ckpt.tar or a FishNet-150 file.',
            welltrained_201,
        )
    if any(_WELLTRAINED_RE.match(key) for key in keys):
        return 'welltrained'
    return 'reference'


def _is_counter(key: str) -> bool:
    return key.endswith('.num_batches_tracked')


def _is_score(reference_key: str) -> bool:
    return (map_key(reference_key) or '').startswith('score.')


def _missing(keys: Sequence[str], table: Mapping[str, str], require_score: bool) -> List[str]:
    """Keys of ``table`` that ``keys`` lack (counters never needed, the score head if asked)."""
    present = set(keys)
    return [
        k
        for k, ref in table.items()
        if k not in present and not _is_counter(k) and (require_score or not _is_score(ref))
    ]


def _fitting_arch(keys: Sequence[str], layout: str, require_score: bool) -> Tuple[str, bool]:
    """The variant whose ``layout`` table the keys are (exact: True), or the closest one."""

    def misfit(arch: str) -> Tuple[List[str], List[str]]:
        table = layout_table(layout, arch)
        extra = [k for k in keys if k not in table]
        return extra, _missing(keys, table, require_score)

    for arch in REFERENCE_ARCHS:
        extra, missing = misfit(arch)
        if not extra and not missing:
            return arch, True
    return min(REFERENCE_ARCHS, key=lambda arch: sum(map(len, misfit(arch)))), False


def to_reference_layout(
    state_dict: Mapping[str, torch.Tensor],
    require_score: bool = False,
) -> Tuple['OrderedDict[str, torch.Tensor]', str]:
    """Rename a FishNet state dict of any supported layout into the reference's.

    Args:
        state_dict: A state dict in one of :data:`LAYOUTS` (with or without ``module.``).
        require_score: The ImageNet score head must be there too (it is kept).

    Returns:
        The state dict with reference keys (no ``module.``; the same tensors, in the input's
        order) and the layout read. A ``'reference'`` state dict comes back unchanged, for
        :func:`~mmfish.models.converters.convert.convert` to check.

    Raises:
        NotFishNetCheckpointError: a pytorchcv state dict of another model.
        UnplacedKeyError: keys with no place in the variant their layout is closest to.
        MissingKeyError: keys of that variant (in the file's layout) that the file lacks.
        ShapeMismatchError: tensors of another shape than the reference's.
    """
    source = strip_module_prefix(state_dict)
    layout = detect_layout(source)
    if layout == 'reference':
        return source, layout
    keys = list(source)
    bad_values = [k for k, v in source.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise NotFishNetCheckpointError(
            f'Not a state dict of tensors: {key_listing(bad_values)} hold other objects.',
            bad_values,
        )
    if not any(key in layout_table(layout, arch) for arch in REFERENCE_ARCHS for key in keys):
        what = (
            'a pytorchcv (imgclsmob) state dict of a model other than FishNet (no key of '
            "pytorchcv's fishnet99 / fishnet150)"
            if layout == 'pytorchcv'
            else f'not a FishNet state dict (no key of {LAYOUT_NAMES[layout]})'
        )
        raise NotFishNetCheckpointError(
            f'This looks like {what}; it holds {key_listing(keys)}.', keys
        )
    arch, exact = _fitting_arch(keys, layout, require_score)
    where = f'FishNet {arch}' + ('' if exact else ' (the variant closest to its keys)')
    table = layout_table(layout, arch)
    unplaced = [k for k in keys if k not in table]
    if unplaced:
        raise UnplacedKeyError(
            f'Cannot place {key_listing(unplaced)} of this state dict in {LAYOUT_NAMES[layout]} on '
            f'{where}. Nothing was converted.',
            unplaced,
        )
    missing = _missing(keys, table, require_score)
    if missing:
        raise MissingKeyError(
            f'This state dict in {LAYOUT_NAMES[layout]} lacks {key_listing(missing)} of {where}.',
            missing,
        )
    fc_weight = source.get(layout_key(layout, 'fish.fish.9.4.1.weight'))
    num_classes = int(fc_weight.shape[0]) if fc_weight is not None and fc_weight.dim() else 1000
    shapes = expected_shapes(arch, num_classes)
    wrong = []
    for key, value in source.items():
        expected = shapes.get(map_key(table[key]))
        if expected is not None and tuple(value.shape) != expected:
            wrong.append(f'{key} {tuple(value.shape)} (expected {expected}, as {table[key]})')
    if wrong:
        raise ShapeMismatchError(
            f'Shape mismatch in {LAYOUT_NAMES[layout]} for {key_listing(wrong)}.',
            [w.split(' ', 1)[0] for w in wrong],
        )
    return OrderedDict((table[key], value) for key, value in source.items()), layout


def describe_layout(layout: Optional[str]) -> str:
    """A readable name of a layout, for messages."""
    return LAYOUT_NAMES.get(layout or '', str(layout))


__all__ = [
    'LAYOUTS',
    'LAYOUT_NAMES',
    'WELLTRAINED_RENAMES',
    'describe_layout',
    'detect_layout',
    'layout_key',
    'layout_table',
    'to_reference_layout',
]
