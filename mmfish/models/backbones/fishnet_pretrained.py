"""Which ImageNet weights each FishNet variant can start from, and what a backbone may load.

:class:`~mmfish.models.backbones.fishnet.FishNet` checks a ``Pretrained`` checkpoint before it
loads it. The check takes plain data: the state dict, and what it needs of the model as a
:class:`LoadTarget` (its variant, its keys and shapes, a few options for the messages).
mmengine's ``Pretrained`` init loads non-strictly: keys it cannot place are only logged, so a
checkpoint of another variant (a FishNet-150 file under a FishNet-99 config's file name) would
load in part and leave the rest of the backbone at its random initialisation.
Here such a checkpoint is refused, with a message naming both variants, the keys at fault and
the file to convert instead:

- a file written by ``tools/model_converters/fishnet2mmdet.py`` records its variant in
  ``meta['arch']`` (with ``meta['layout']`` and ``meta['source']``): another variant than the
  model's is refused;
- every checkpoint (converted before the converter wrote ``meta``, trained by mmfish, or taken
  from a detector with ``prefix='backbone.'``) must have the model's keys and shapes. Legal
  differences: out norms filled from their consumer's keys (or absent, with the model's warning),
  ``num_batches_tracked`` counters (absent in old files), and stages the model does not build
  (the score head, stages after the last of ``out_indices``, out norms of other features).

:data:`~mmfish.models.backbones.variants.PUBLISHED_WEIGHTS` lists the published ImageNet files
per variant, with the file name the configs expect for each (docs/weights.md);
:func:`how_to_get_weights` turns it into the fix that the missing-file and mismatch messages
print.
"""

import os
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from mmfish.utils.errors import UserInputError, listing
from mmfish.utils.mim import config_reference

from .variants import (
    ARCH_SETTINGS,
    CONVERTER,
    NO_PUBLISHED_WEIGHTS,
    PUBLISHED_WEIGHTS,
    REFERENCE_ARCHS,
    ImageNetWeights,
    block_counts,
    variant_of_counts,
)

SHOWN_KEYS = 5  # keys listed per kind in a mismatch message
SCRATCH_CONFIG = config_reference('mask_rcnn_{arch}_fpn_gn-all_scratch_6x_coco.py')
# Converted by mmfish: the meta keys the converter writes beside the variant.
_CONVERTER_META = ('arch', 'layout', 'source')
_STAGED = ('tail', 'body', 'head', 'out_norms')
_FISHNET_UNIT_RE = re.compile(r'^(stem|bridge|score|(tail|body|head)\.[0-2]|out_norms\.\d+)$')


class PretrainedMismatchError(UserInputError):
    """A ``Pretrained`` checkpoint does not fit the FishNet that would load it.

    Attributes:
        model_variant: The model's variant (None for a custom arch).
        file_variant: The variant the file holds, when known (its meta or its block counts).
    """

    def __init__(
        self, message: str, model_variant: Optional[str] = None, file_variant: Optional[str] = None
    ) -> None:
        super().__init__(message)
        self.model_variant = model_variant
        self.file_variant = file_variant


class LoadTarget(NamedTuple):
    """What the check needs to know of the FishNet that is to load a checkpoint.

    Attributes:
        variant: The model's variant (a key of ``ARCH_SETTINGS``), None for a custom arch.
        shapes: The model's state-dict keys and the shape of each.
        frozen_stages: The model's ``frozen_stages``.
        norm_eval: The model's ``norm_eval``.
        norm_cfg: The model's ``norm_cfg``.
    """

    variant: Optional[str]
    shapes: Mapping[str, Tuple[int, ...]]
    frozen_stages: int
    norm_eval: bool
    norm_cfg: Mapping


def variant_weights(arch: Optional[str]) -> List[ImageNetWeights]:
    """The published files of ``arch``, the strongest first."""
    return [w for w in PUBLISHED_WEIGHTS if w.arch == arch]


def variant_named_by(path: str, arch: Optional[str]) -> Optional[str]:
    """The variant other than ``arch`` whose name the file name of ``path`` contains, if any
    (``checkpoints/fishnet99_in1k_mmfish.pth`` names ``fishnet99``)."""
    name = os.path.basename(path).lower()
    for variant in sorted(ARCH_SETTINGS, key=len, reverse=True):
        if variant != arch and variant in name:
            return variant
    return None


def how_to_get_weights(arch: Optional[str], path: str, file_variant: Optional[str] = None) -> str:
    """What to convert (and with which command) to get ImageNet weights of ``arch`` at ``path``.

    When ``path`` holds or names another variant's weights (``file_variant``, or its file name),
    the command writes to the file name the configs expect for ``arch`` instead, and says to point
    the config at it: a FishNet-150 file is never written under a FishNet-99 name.

    Args:
        arch: A variant name, or None for a custom arch.
        path: Where the model looks for the converted file.
        file_variant: The variant the file at ``path`` holds, when known.
    """
    other = file_variant if file_variant not in (None, arch) else variant_named_by(path, arch)
    dest = path if other is None else f'checkpoints/{arch}_in1k_mmfish.pth'
    weights = variant_weights(arch)
    if not weights:
        if arch in NO_PUBLISHED_WEIGHTS:
            return NO_PUBLISHED_WEIGHTS[arch].format(path=dest)
        return (
            'No ImageNet weights are published for a custom arch: load a checkpoint of your own '
            'training of the same arch.'
        )
    named = [w for w in weights if os.path.basename(w.converted) == os.path.basename(path)]
    first = named[0] if named else weights[0]  # the file this path names, else the strongest
    others = [w for w in weights if w is not first]
    if other is not None:
        dest = first.converted
    text = (
        f'Convert {first.file} ({first.source}, {first.top1}% ImageNet top-1'
        + ('; the file this path names' if named else '')
        + f'): `{CONVERTER} {first.file} {dest} --arch {arch}`'
        + (f', and set model.backbone.init_cfg.checkpoint={dest}.' if dest != path else '.')
    )
    if others:
        listed = '; '.join(
            f'{w.file} ({w.source}, {w.top1}% top-1), which the configs expect converted to '
            f'{w.converted}'
            for w in others
        )
        text += f' Other published {arch} files: {listed} (docs/weights.md).'
    return text


def how_to_use_file(file_variant: str) -> str:
    """How to train from weights of ``file_variant``: its configs, or its arch in yours."""
    text = (
        f'train a {file_variant} config (e.g. '
        f'{config_reference(f"mask_rcnn_{file_variant}_fpn_1x_coco.py")})'
    )
    if file_variant in ARCH_SETTINGS:  # the named variants share FishNet-150's channels
        text += f' or set model.backbone.arch={file_variant} in yours'
    return text


def how_to_train_from_scratch(target: LoadTarget) -> str:
    """The from-scratch route for the model ``target`` describes, one sentence."""
    variant = target.variant
    if variant in REFERENCE_ARCHS:
        config = SCRATCH_CONFIG.format(arch=variant)
    else:  # FishNeXt-150 or a custom arch: FishNet-150's recipe with the model's arch
        config = SCRATCH_CONFIG.format(arch='fishnet150') + (
            f' with --cfg-options model.backbone.arch={variant}' if variant else ' with your arch'
        )
    if target.frozen_stages >= 0 or target.norm_eval:
        return (
            f'To train without ImageNet weights, use a from-scratch recipe, {config} '
            f'(docs/training.md, "Training from scratch"): init_cfg=None alone would keep '
            f'frozen_stages={target.frozen_stages} and norm_eval={target.norm_eval}, which leave '
            'random layers frozen and norm statistics at their initial values.'
        )
    return (
        'To train without ImageNet weights, set init_cfg=None (this backbone freezes nothing and '
        f'trains its norms); for detection, the full from-scratch recipe is {config} '
        '(docs/training.md, "Training from scratch").'
    )


def missing_checkpoint_message(target: LoadTarget, path: str) -> str:
    """Why a missing ``Pretrained`` file stops training, and how to make it."""
    named = variant_named_by(path, target.variant)
    wrong_name = (
        f'Its name is that of a {named} file: to fine-tune {named}, {how_to_use_file(named)}. '
        f'For {target.variant} weights: '
        if named
        else ''
    )
    return (
        f'FishNet pretrained checkpoint {path!r} not found (cwd: {os.getcwd()}). {wrong_name}'
        f'{how_to_get_weights(target.variant, path)} {how_to_train_from_scratch(target)}'
    )


# ----------------------------------------------------------------------------- the load check
def _unit(key: str) -> str:
    """The part of FishNet a key belongs to: ``stem``, ``tail.1``, ``out_norms.7``, ..."""
    parts = key.split('.')
    return '.'.join(parts[:2]) if parts[0] in _STAGED and len(parts) > 1 else parts[0]


def backbone_state_dict(
    checkpoint: Mapping, prefix: Optional[str]
) -> Tuple[Dict[str, object], Optional[dict]]:
    """The state dict that mmengine's ``Pretrained`` init loads, and the converter's meta.

    Read as mmengine reads it: ``checkpoint['state_dict']`` (or the checkpoint itself); without
    a prefix, ``module.`` stripped and the state dict's ``_metadata`` kept (``load_state_dict``
    reads the version of each module from it); with one, only the keys under ``prefix``,
    stripped of it. The meta is the converter's (a dict with ``arch``, ``layout`` and
    ``source``) only for a whole file, not for a part of one taken by ``prefix``.
    """
    state_dict = checkpoint['state_dict'] if 'state_dict' in checkpoint else checkpoint
    if not isinstance(state_dict, Mapping):
        state_dict = {}
    meta = checkpoint.get('meta') if 'state_dict' in checkpoint else None
    if prefix is None:
        metadata = getattr(state_dict, '_metadata', OrderedDict())
        state_dict = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in state_dict.items())
        state_dict._metadata = metadata  # type: ignore[attr-defined]
    else:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        meta = None
    if not (isinstance(meta, Mapping) and all(key in meta for key in _CONVERTER_META)):
        meta = None
    return state_dict, meta


def check_pretrained(
    state_dict: Mapping[str, object],
    meta: Optional[Mapping],
    target: LoadTarget,
    path: str,
    prefix: Optional[str] = None,
) -> None:
    """Refuse a ``Pretrained`` checkpoint that would load only in part into a model.

    Args:
        state_dict: The state dict the model is to load (:func:`backbone_state_dict`), its out
            norms already filled from their consumers' keys as loading fills them
            (``FishNet.fill_out_norms``).
        meta: The converter's meta of the file (:func:`backbone_state_dict`), or None.
        target: The model that is to load it.
        path: The file's path, for messages.
        prefix: ``init_cfg``'s ``prefix`` (e.g. ``'backbone.'`` for a detector's file).

    Raises:
        PretrainedMismatchError: the file records another variant, or its keys or shapes are
            not the model's (beyond the legal differences of the module docstring).
    """
    variant = target.variant
    model_name = f'FishNet (arch {variant!r})' if variant else 'FishNet (a custom arch)'
    if not state_dict:
        raise PretrainedMismatchError(
            f'{model_name} cannot load the Pretrained checkpoint {path!r}: no key '
            + (f'starts with prefix {prefix!r}.' if prefix else 'holds a tensor.')
            + ' Is it a checkpoint of this network?'
        )

    own = target.shapes
    built = {_unit(k) for k in own}
    missing = [
        k
        for k in own
        if k not in state_dict
        and not k.endswith('.num_batches_tracked')  # old files lack them: loading keeps 0
        and not k.startswith('out_norms.')  # no consumer norm: the model warns, keeps its norm
    ]
    unexpected = [
        k
        for k in state_dict
        if k not in own and (not _FISHNET_UNIT_RE.match(_unit(k)) or _unit(k) in built)
    ]
    wrong = [
        f'{k} {tuple(getattr(state_dict[k], "shape", ()))} (model {own[k]})'
        for k in own
        if k in state_dict and tuple(getattr(state_dict[k], 'shape', ())) != own[k]
    ]

    recorded = meta['arch'] if meta is not None else None
    other_variant = recorded is not None and recorded != variant
    if not (other_variant or missing or unexpected or wrong):
        return

    holds = recorded or variant_of_counts(block_counts(state_dict))
    if recorded is not None:
        what = (
            f'it holds FishNet {recorded!r} weights (its meta: converted from '
            f'{meta["source"]!r}, {meta["layout"]} layout)'
        )
    elif holds is not None:
        what = f'its keys are those of FishNet {holds!r}'
    else:
        what = 'its keys and shapes are not those of this model'
    if holds is not None and holds != variant:
        what += f', not {variant!r}' if variant else ', not those of this custom arch'
    details = []
    for label, keys in (
        ('missing', missing),
        ('unexpected', unexpected),
        ('of another shape', wrong),
    ):
        if keys:
            details.append(f'{label}: {listing(keys, SHOWN_KEYS)}')
    hints = []
    if any(k.startswith('backbone.') for k in unexpected):
        hints.append(
            "Its keys start with 'backbone.': a detector's checkpoint; load its backbone with "
            "init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')."
        )
    if any(k.startswith(('fish.fish.', 'features.', 'conv1.')) for k in unexpected):
        hints.append(
            f'Its keys are not mmfish names: convert the file first with `{CONVERTER} '
            f'SOURCE DEST --arch {variant or "fishnetXX"}`.'
        )
    if missing and all(k.startswith('score.') for k in missing):
        hints.append(
            'Only the score head is missing: convert with --keep-score for '
            'FishNet(num_classes=...).'
        )
    statistics = ('.running_mean', '.running_var', '.num_batches_tracked')
    if (missing or unexpected) and all(k.endswith(statistics) for k in missing + unexpected):
        consequence = 'Loaded, its norms would lose their running statistics.'
        fix = (
            'Only norm statistics differ: the file was trained with another kind of norm '
            "(BatchNorm keeps running statistics, GroupNorm none) than this model's norm_cfg "
            f'{dict(target.norm_cfg)}; build the backbone with the norm_cfg of the file.'
        )
    else:
        consequence = 'Loaded, it would leave part of the backbone at its random initialisation.'
        fix = f'{how_to_get_weights(variant, path, holds)} {how_to_train_from_scratch(target)}'
        if holds is not None and holds != variant:
            fix = (
                f'to fine-tune {holds} from this file, {how_to_use_file(holds)}. To train '
                f'{variant or "this arch"} instead: {fix}'
            )
    raise PretrainedMismatchError(
        f'{model_name} refuses the Pretrained checkpoint {path!r}: {what}. {consequence} Keys '
        + ('; '.join(details) if details else 'match')
        + '. '
        + ''.join(hint + ' ' for hint in hints)
        + f'Fix: {fix}',
        model_variant=variant,
        file_variant=holds,
    )


__all__ = [
    'LoadTarget',
    'PretrainedMismatchError',
    'backbone_state_dict',
    'check_pretrained',
    'how_to_get_weights',
    'how_to_train_from_scratch',
    'how_to_use_file',
    'missing_checkpoint_message',
    'variant_named_by',
]
