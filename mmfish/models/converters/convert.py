"""Convert the authors' FishNet checkpoints (github kevin-ssy/FishNet) to mmfish's names.

The reference checkpoints (``fishnet99_ckpt.tar``, ``fishnet150_ckpt.tar``) are ``torch.save``
dicts ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}`` whose ``state_dict`` keys
carry a ``module.`` prefix (saved from ``DataParallel``). Every key is mapped onto
:class:`mmfish.models.FishNet`'s names by the key grammar of :mod:`mmfish.models.converters.keys`;
the variant is told from the block counts. Every problem raises a
:class:`~mmfish.models.converters.errors.FishNetConversionError` (a ``ValueError``) naming the
keys at fault.

Other layouts of the same network (the authors' "well-trained" FishNet-150 file, pytorchcv's
FishNet state dicts) are renamed into this one first, exactly or not at all, by
:mod:`mmfish.models.converters.layouts`; :func:`convert_checkpoint` reports the layout it read.
"""

import os
from collections import OrderedDict
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

from mmfish.models.backbones.fishnet import CONSUMER_NORMS, NORM_STATE
from mmfish.models.backbones.variants import REFERENCE_ARCHS, block_counts, variant_of_counts
from mmfish.utils.io import atomic_path

from .errors import (
    ArchMismatchError,
    CheckpointReadError,
    FishNetConversionError,
    MissingKeyError,
    NotFishNetCheckpointError,
    ShapeMismatchError,
    UnplacedKeyError,
)
from .keys import (
    expected_shapes,
    key_listing,
    map_key,
    reference_names,
    strip_module_prefix,
)
from .layouts import to_reference_layout

# The out norms the converter writes: those of FishNet's default out_indices (the FPN input).
DEFAULT_OUT_INDICES: Tuple[int, ...] = (7, 8, 9, 10)


def detect_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The variant (``'fishnet99'``, ...) of a reference state dict, from its block counts."""
    mapped = [map_key(key) for key in strip_module_prefix(state_dict)]
    counts = block_counts(key for key in mapped if key is not None)
    arch = variant_of_counts(counts)
    if arch is not None:
        return arch
    raise NotFishNetCheckpointError(
        f'The block counts of this checkpoint, {counts}, match no FishNet variant '
        f'({", ".join(REFERENCE_ARCHS)}). Pass arch= (--arch) to list the keys it misses or '
        'has in excess.'
    )


def _closest_arch(present: Sequence[str]) -> str:
    present_set = set(present)

    def distance(arch: str) -> int:
        expected = set(expected_shapes(arch, None))
        return len(expected ^ present_set)

    return min(REFERENCE_ARCHS, key=distance)


def convert(
    state_dict: Mapping[str, torch.Tensor],
    keep_score: bool = False,
    arch: Optional[str] = None,
) -> 'OrderedDict[str, torch.Tensor]':
    """Map a reference FishNet state dict onto mmfish's ``FishNet`` names.

    Args:
        state_dict: The reference's ``state_dict`` (keys with or without ``module.``), or one
            in another layout of :mod:`mmfish.models.converters.layouts`.
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
    if arch is not None and arch not in REFERENCE_ARCHS:
        raise ValueError(f'arch must be one of {REFERENCE_ARCHS} or None, got {arch!r}')
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise NotFishNetCheckpointError('The state dict is empty or not a mapping.')
    bad_values = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise NotFishNetCheckpointError(
            f'Not a state dict of tensors: {key_listing(bad_values)} hold other objects.',
            bad_values,
        )
    source, _ = to_reference_layout(state_dict, require_score=keep_score)
    if not any(key.startswith('fish.fish.') for key in source):
        keys = list(source)
        raise NotFishNetCheckpointError(
            'Not a FishNet checkpoint (no "fish.fish.*" key of the reference implementation); '
            f'it holds {key_listing(keys)}.',
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
    # (Well-trained keys never get here: the layouts renamed them or refused the file.)
    if unplaced:
        raise UnplacedKeyError(
            f'Cannot place {key_listing(unplaced)} on mmfish FishNet {target}{closest}.', unplaced
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
        inverse = reference_names(target)
        names = [inverse.get(k, k) for k in missing]
        raise MissingKeyError(
            f'The checkpoint lacks {key_listing(names)} of FishNet {target}{closest}.', names
        )
    present = mapped
    wrong = [
        f'{present[k][0]} {tuple(present[k][1].shape)} (expected {shape})'
        for k, shape in expected.items()
        if k in present and tuple(present[k][1].shape) != shape
    ]
    if wrong:
        raise ShapeMismatchError(
            f'Shape mismatch for {key_listing(wrong)}.', [w.split(' ', 1)[0] for w in wrong]
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
        for leaf in NORM_STATE:
            converted[f'out_norms.{index}.{leaf}'] = value(f'{consumer}.{leaf}').clone()
    if keep_score:
        converted.update((key, value(key)) for key in expected if key.startswith('score.'))
    return converted


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
            f'a dict of {key_listing(sorted(map(str, checkpoint)))}'
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


def to_classifier(converted: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """A converted state dict with its score head, as an MMPretrain ``ImageClassifier``'s.

    The backbone's keys go under ``backbone.``, the score head's under ``head.`` (the
    :class:`~mmfish.models.classification.FishNetClsHead` keeps it as ``score``); the out norms
    of the detection backbone are left out (the classifier's backbone has none).
    """
    if 'score.fc.weight' not in converted:
        raise MissingKeyError(
            'a classifier checkpoint needs the score head: convert with keep_score=True '
            '(--keep-score)'
        )
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in converted.items():
        if key.startswith('out_norms.'):
            continue
        out[f'head.{key}' if key.startswith('score.') else f'backbone.{key}'] = value
    return out


def convert_checkpoint(
    src: str,
    dst: str,
    keep_score: bool = False,
    arch: Optional[str] = None,
    classifier: bool = False,
) -> dict:
    """Convert the reference checkpoint ``src`` and save it to ``dst``.

    Reads any layout of :mod:`mmfish.models.converters.layouts`. Writes ``{'state_dict': ...,
    'meta': {'arch', 'layout', 'source', 'with_score', 'num_classes'}}`` with :func:`torch.save`
    to a temporary file then renamed to ``dst`` (on any error ``dst`` is left as it was),
    loadable by ``FishNet(arch=..., init_cfg=dict(type='Pretrained', checkpoint=dst))``. The
    meta records the variant (``arch``: ``arch`` if given, which must be the file's, else the one
    detected), the ``layout`` read and the ``source`` file's name: FishNet's ``Pretrained`` init
    refuses the file for a model of another variant
    (:mod:`mmfish.models.backbones.fishnet_pretrained`).

    With ``classifier=True`` (which keeps the score head) the file is a whole MMPretrain
    ``ImageClassifier`` checkpoint instead (:func:`to_classifier`), loadable by ``load_from`` or
    ``tools/test.py CONFIG FILE``; its meta says ``model='ImageClassifier'``.

    Returns:
        The ``meta`` dict written.
    """
    keep_score = keep_score or classifier
    source, layout = to_reference_layout(load_reference_checkpoint(src), require_score=keep_score)
    converted = convert(source, keep_score=keep_score, arch=arch)
    detected = arch or detect_arch(source)
    meta = dict(
        arch=detected,
        layout=layout,
        source=os.path.basename(src),
        with_score=keep_score,
        num_classes=int(converted['score.fc.weight'].shape[0]) if keep_score else None,
    )
    if classifier:
        converted = to_classifier(converted)
        meta['model'] = 'ImageClassifier'
    with atomic_path(dst) as tmp_path:
        torch.save({'state_dict': converted, 'meta': meta}, tmp_path)
    return meta


__all__ = [
    'DEFAULT_OUT_INDICES',
    'convert',
    'convert_checkpoint',
    'detect_arch',
    'load_reference_checkpoint',
    'to_classifier',
]
