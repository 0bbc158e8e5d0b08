"""Convert the authors' FishNet checkpoints (github kevin-ssy/FishNet) to mmfish's names.

The reference checkpoints (``fishnet99_ckpt.tar``, ``fishnet150_ckpt.tar``) are ``torch.save``
dicts ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}`` whose ``state_dict`` keys
carry a ``module.`` prefix (saved from ``DataParallel``). The reference numbers its modules by
position; this module maps every key onto :class:`mmfish.models.FishNet`'s names:

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
``shortcut.{0,2}`` -> ``projection.{0,2}``. The variant is told from the block counts. Every
problem raises a :class:`FishNetConversionError` (a ``ValueError``) naming the keys at fault.

Other layouts of the same network (the authors' "well-trained" FishNet-150 file, pytorchcv's
FishNet state dicts) are renamed into this one first, exactly or not at all, by
:mod:`mmfish.models.converter_layouts`; :func:`convert_checkpoint` reports the layout it read.
"""

import os
import re
from collections import OrderedDict
from functools import cache
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

from mmfish.models.backbones.fishnet import CONSUMER_NORMS
from mmfish.models.backbones.fishnet_pretrained import ARCHS, block_counts, variant_of_counts

# The out norms the converter writes: those of FishNet's default out_indices (the FPN input).
DEFAULT_OUT_INDICES: Tuple[int, ...] = (7, 8, 9, 10)
MAX_LISTED = 20  # keys listed in full in an error message

_NORM_LEAVES = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
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
_LEAF = r'(weight|bias|running_mean|running_var|num_batches_tracked)'
_STEM_RE = re.compile(r'^conv([123])\.([01])\.' + _LEAF + '$')
_BLOCK_RE = re.compile(
    r'^fish\.fish\.(\d+)\.(\d+)\.(\d+)\.(bn[123]|conv[123]|shortcut\.[02])\.' + _LEAF + '$'
)
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
    + _LEAF
    + '$'
)


class FishNetConversionError(ValueError):
    """A checkpoint cannot be converted; ``keys`` names the keys at fault (may be empty)."""

    def __init__(self, message: str, keys: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.keys: List[str] = list(keys)


class CheckpointReadError(FishNetConversionError):
    """The file cannot be read: truncated, corrupt, or holding more than tensors."""


class NotFishNetCheckpointError(FishNetConversionError):
    """The file is readable but is not a FishNet checkpoint (foreign)."""


class UnplacedKeyError(FishNetConversionError):
    """Some keys have no counterpart in mmfish's FishNet."""


class MissingKeyError(FishNetConversionError):
    """The checkpoint lacks keys that the detected (or requested) variant has."""


class ArchMismatchError(FishNetConversionError):
    """The requested ``arch`` is not the variant the checkpoint holds."""


class ShapeMismatchError(FishNetConversionError):
    """Some tensors do not have the shape of their mmfish counterpart."""


def _listing(keys: Sequence[str]) -> str:
    keys = list(keys)
    shown = ', '.join(keys[:MAX_LISTED])
    more = f' (and {len(keys) - MAX_LISTED} more)' if len(keys) > MAX_LISTED else ''
    return f'{len(keys)} key(s): {shown}{more}'


def map_key(key: str) -> Optional[str]:
    """The mmfish name of a reference key (``module.`` already stripped), or None."""
    match = _STEM_RE.match(key)
    if match:
        conv, slot, leaf = match.groups()
        return f'stem.{3 * (int(conv) - 1) + int(slot)}.{leaf}'
    match = _BLOCK_RE.match(key)
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


def _arch_settings() -> Dict[str, dict]:
    from mmfish.models.backbones.fishnet import FishNet

    return FishNet.arch_settings


@cache
def expected_shapes(arch: str, num_classes: Optional[int]) -> 'OrderedDict[str, Tuple[int, ...]]':
    """Keys and shapes of ``FishNet(arch, out_norm=False, num_classes=...)`` (built on 'meta')."""
    from mmfish.models.backbones.fishnet import FishNet

    with torch.device('meta'):
        model = FishNet(
            arch=arch, out_indices=(7, 8, 9, 10), out_norm=False, num_classes=num_classes
        )
    return OrderedDict((key, tuple(value.shape)) for key, value in model.state_dict().items())


def detect_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The variant (``'fishnet99'``, ...) of a reference state dict, from its block counts."""
    mapped = [map_key(key) for key in strip_module_prefix(state_dict)]
    counts = block_counts(key for key in mapped if key is not None)
    arch = variant_of_counts(counts, _arch_settings())
    if arch is not None:
        return arch
    raise NotFishNetCheckpointError(
        f'The block counts of this checkpoint, {counts}, match no FishNet variant '
        f'({", ".join(ARCHS)}). Pass arch= (--arch) to list the keys it misses or has in excess.'
    )


def _closest_arch(present: Sequence[str]) -> str:
    present_set = set(present)

    def distance(arch: str) -> int:
        expected = set(expected_shapes(arch, None))
        return len(expected ^ present_set)

    return min(ARCHS, key=distance)


def convert(
    state_dict: Mapping[str, torch.Tensor],
    keep_score: bool = False,
    arch: Optional[str] = None,
) -> 'OrderedDict[str, torch.Tensor]':
    """Map a reference FishNet state dict onto mmfish's ``FishNet`` names.

    Args:
        state_dict: The reference's ``state_dict`` (keys with or without ``module.``), or one
            in another layout of :mod:`mmfish.models.converter_layouts`.
        keep_score: Keep the ImageNet score head as ``score.*`` (for ``FishNet(num_classes=...)``
            and :meth:`FishNet.classify`); False drops it (detection).
        arch: The expected variant; None detects it. Given and different from the detected
            variant: :class:`ArchMismatchError`.

    Returns:
        The converted state dict, with the keys, in order, of mmfish's ``FishNet(arch)`` (the
        default detection backbone, ``num_classes=1000`` with ``keep_score``): the network's
        weights and ``out_norms.{7,8,9,10}``, copies of the trained norm that consumes each of
        those features in the network (``CONSUMER_NORMS``), so that nothing is missing when the
        detection backbone loads the file. Norm layers without ``num_batches_tracked``
        (checkpoints of PyTorch < 0.4.1) get a zero counter.

    Raises:
        FishNetConversionError: a subclass naming the keys at fault: foreign, unplaced,
            missing, shape mismatch, arch mismatch.
    """
    if arch is not None and arch not in ARCHS:
        raise ValueError(f'arch must be one of {ARCHS} or None, got {arch!r}')
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise NotFishNetCheckpointError('The state dict is empty or not a mapping.')
    bad_values = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise NotFishNetCheckpointError(
            f'Not a state dict of tensors: {_listing(bad_values)} hold other objects.', bad_values
        )
    source, _ = _to_reference_layout(state_dict, keep_score)
    if not any(key.startswith('fish.fish.') for key in source):
        keys = list(source)
        raise NotFishNetCheckpointError(
            'Not a FishNet checkpoint (no "fish.fish.*" key of the reference implementation); '
            f'it holds {_listing(keys)}.',
            keys,
        )

    mapped: OrderedDict[str, Tuple[str, torch.Tensor]] = OrderedDict()
    unplaced: List[str] = []
    for key, value in source.items():
        new_key = map_key(key)
        if new_key is None:
            unplaced.append(key)
        else:
            mapped[new_key] = (key, value)

    try:
        detected: Optional[str] = detect_arch(source)
    except NotFishNetCheckpointError:
        detected = None
    if arch is not None and detected is not None and arch != detected:
        raise ArchMismatchError(
            f'arch={arch!r} was requested but the checkpoint is a {detected} (block counts '
            f'{block_counts(mapped)}).'
        )
    target = arch or detected or _closest_arch([k for k in mapped if not k.startswith('score.')])
    closest = (
        ''
        if detected or arch
        else f' (the closest variant: the block counts {block_counts(mapped)} match none)'
    )

    # Every key must have a place by name, the score head's too even when it is dropped.
    known = expected_shapes(target, 1000)
    unplaced += [source_key for k, (source_key, _) in mapped.items() if k not in known]
    # (Well-trained keys never get here: converter_layouts renamed them or refused the file.)
    if unplaced:
        raise UnplacedKeyError(
            f'Cannot place {_listing(unplaced)} on mmfish FishNet {target}{closest}.', unplaced
        )

    num_classes = 1000
    fc_weight = mapped.get('score.fc.weight')
    if fc_weight is not None and fc_weight[1].dim() == 4:
        num_classes = int(fc_weight[1].shape[0])
    expected = expected_shapes(target, num_classes)

    def is_counter(key: str) -> bool:
        return key.endswith('.num_batches_tracked')

    def needed(key: str) -> bool:
        # The score head's first norm is feature 10's consumer: its copy is an out norm.
        return not is_counter(key) and (
            keep_score or not key.startswith('score.') or key.startswith(CONSUMER_NORMS[10] + '.')
        )

    missing = [k for k in expected if k not in mapped and needed(k)]
    if missing:
        inverse = _reference_names(target)
        names = [inverse.get(k, k) for k in missing]
        raise MissingKeyError(
            f'The checkpoint lacks {_listing(names)} of FishNet {target}{closest}.', names
        )
    present = mapped
    wrong = [
        f'{present[k][0]} {tuple(present[k][1].shape)} (expected {shape})'
        for k, shape in expected.items()
        if k in present and tuple(present[k][1].shape) != shape
    ]
    if wrong:
        raise ShapeMismatchError(
            f'Shape mismatch for {_listing(wrong)}.', [w.split(' ', 1)[0] for w in wrong]
        )

    def value(key: str) -> torch.Tensor:
        if key in present:
            return present[key][1]
        return torch.tensor(0, dtype=torch.long)  # a num_batches_tracked that old files lack

    converted: OrderedDict[str, torch.Tensor] = OrderedDict(
        (key, value(key)) for key in expected if not key.startswith('score.')
    )
    # The detection backbone's out norms: copies of each feature's trained consumer norm (the
    # score head's first norm for feature 10, kept even when the score head is dropped).
    for index in DEFAULT_OUT_INDICES:
        consumer = CONSUMER_NORMS[index]
        for leaf in _NORM_LEAVES:
            converted[f'out_norms.{index}.{leaf}'] = value(f'{consumer}.{leaf}').clone()
    if keep_score:
        converted.update((key, value(key)) for key in expected if key.startswith('score.'))
    return converted


def _reference_names(arch: str) -> Dict[str, str]:
    """mmfish key -> reference key (without ``module.``) for one variant."""
    settings = _arch_settings()[arch]
    names: List[str] = [
        f'conv{c}.{s}.{leaf}'
        for c in (1, 2, 3)
        for s, leaves in ((0, ('weight',)), (1, _NORM_LEAVES))
        for leaf in leaves
    ]
    block_leaves = [
        f'{part}.{leaf}'
        for part in ('bn1', 'conv1', 'bn2', 'conv2', 'bn3', 'conv3', 'shortcut.0', 'shortcut.2')
        for leaf in (_NORM_LEAVES if part.startswith(('bn', 'shortcut.0')) else ('weight',))
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
        names += [f'{module}.{leaf}' for leaf in _NORM_LEAVES]
    table = {}
    for name in names:
        new = map_key(name)
        if new is not None:
            table[new] = name
    return table


def load_reference_checkpoint(path: str) -> 'OrderedDict[str, torch.Tensor]':
    """Read a reference checkpoint file and return its state dict (``module.`` stripped).

    Accepts the reference's ``{'state_dict': ..., ...}`` dicts and bare state dicts. Loads with
    ``weights_only=True``: tensors, numbers, strings and containers only, no code.

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: truncated, corrupt, or holding objects other than plain data.
        NotFishNetCheckpointError: readable, but not a FishNet state dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'No such checkpoint file: {path}')
    with open(path, 'rb') as f:
        head = f.read(512)
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # torch raises many types for bad files
        raise _unreadable(path, head, error) from error
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get('state_dict'), Mapping):
        state_dict = checkpoint['state_dict']
    elif isinstance(checkpoint, Mapping) and all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        state_dict = checkpoint
    else:
        what = (
            f'a dict with keys {sorted(map(str, checkpoint))[:MAX_LISTED]}'
            if isinstance(checkpoint, Mapping)
            else f'a {type(checkpoint).__name__}'
        )
        raise NotFishNetCheckpointError(
            f'{path} is not a FishNet checkpoint: it holds {what}, neither a "state_dict" '
            'entry nor a state dict of tensors.'
        )
    return strip_module_prefix(state_dict)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f'{type(error).__name__}: {text[0] if text else ""}'


def _unreadable(path: str, head: bytes, error: BaseException) -> FishNetConversionError:
    """The error to raise when ``torch.load`` fails on a file starting with ``head``."""
    if not head:
        return CheckpointReadError(f'{path} is empty.')
    # torch.save writes a zip archive (PyTorch >= 1.6) or a pickle stream (older ones, as the
    # reference files); anything else is a foreign file.
    if not (head.startswith((b'PK\x03\x04', b'\x80')) or _is_tar(head)):
        return NotFishNetCheckpointError(
            f'{path} is not a PyTorch checkpoint (it starts with {head[:16]!r}; '
            f'{_first_line(error)}).'
        )
    if 'unsupported global' in str(error).lower():
        return CheckpointReadError(
            f'{path} holds objects other than tensors, numbers and strings, which '
            'torch.load(weights_only=True) refuses to unpickle (they could run code). Reference '
            'FishNet checkpoints hold plain data only; re-save just the state_dict from a '
            f'trusted environment. ({_unsupported_global(error)})'
        )
    return CheckpointReadError(
        f'{path} looks like a PyTorch checkpoint but cannot be read: it is truncated or '
        f'corrupt ({_first_line(error)}). Download it again.'
    )


def _unsupported_global(error: BaseException) -> str:
    for line in str(error).splitlines():
        if 'unsupported global' in line.lower():
            return line.strip().split(' Please use')[0]
    return _first_line(error)


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b'ustar'


def _to_reference_layout(
    state_dict: Mapping[str, torch.Tensor], keep_score: bool
) -> Tuple['OrderedDict[str, torch.Tensor]', str]:
    """:func:`mmfish.models.converter_layouts.to_reference_layout`, imported late (it imports
    this module)."""
    from mmfish.models.converter_layouts import to_reference_layout

    return to_reference_layout(state_dict, require_score=keep_score)


def _save_atomically(obj: object, dst: str) -> None:
    """``torch.save`` to a temporary file beside ``dst``, then rename it: ``dst`` is whole or
    absent (or, on an error, as it was)."""
    out_dir = os.path.dirname(os.path.abspath(dst))
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, f'.{os.path.basename(dst)}.{os.getpid()}.tmp')
    try:
        torch.save(obj, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def convert_checkpoint(
    src: str,
    dst: str,
    keep_score: bool = False,
    arch: Optional[str] = None,
) -> dict:
    """Convert the reference checkpoint ``src`` and save it to ``dst``.

    Reads any layout of :mod:`mmfish.models.converter_layouts`. Writes ``{'state_dict': ...,
    'meta': {'arch', 'layout', 'source', 'with_score', 'num_classes'}}`` with :func:`torch.save`
    to a temporary file then renamed to ``dst`` (on any error ``dst`` is left as it was),
    loadable by ``FishNet(arch=..., init_cfg=dict(type='Pretrained', checkpoint=dst))``. The
    meta records the variant (``arch``: ``arch`` if given, which must be the file's, else the one
    detected), the ``layout`` read and the ``source`` file's name: FishNet's ``Pretrained`` init
    refuses the file for a model of another variant
    (:mod:`mmfish.models.backbones.fishnet_pretrained`).

    Returns:
        The ``meta`` dict written.
    """
    source, layout = _to_reference_layout(load_reference_checkpoint(src), keep_score)
    converted = convert(source, keep_score=keep_score, arch=arch)
    detected = arch or detect_arch(source)
    meta = dict(
        arch=detected,
        layout=layout,
        source=os.path.basename(src),
        with_score=keep_score,
        num_classes=int(converted['score.fc.weight'].shape[0]) if keep_score else None,
    )
    _save_atomically({'state_dict': converted, 'meta': meta}, dst)
    return meta


__all__ = [
    'ARCHS',
    'ArchMismatchError',
    'CheckpointReadError',
    'FishNetConversionError',
    'MissingKeyError',
    'NotFishNetCheckpointError',
    'ShapeMismatchError',
    'UnplacedKeyError',
    'block_counts',
    'convert',
    'convert_checkpoint',
    'detect_arch',
    'expected_shapes',
    'load_reference_checkpoint',
    'map_key',
    'strip_module_prefix',
]
