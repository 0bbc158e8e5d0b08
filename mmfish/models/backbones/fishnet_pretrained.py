"""Which ImageNet weights each FishNet variant can start from, and what a backbone may load.

:class:`~mmfish.models.backbones.fishnet.FishNet` checks a ``Pretrained`` checkpoint before
mmengine loads it. mmengine's ``Pretrained`` init loads non-strictly: keys it cannot place are
only logged, so a checkpoint of another variant (a FishNet-150 file under a FishNet-99 config's
file name) would load in part and leave the rest of the backbone at its random initialisation.
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

:data:`PUBLISHED_WEIGHTS` lists the published ImageNet files per variant, with the file name the
configs expect for each (README, "ImageNet weights"); :func:`how_to_get_weights` turns it into
the fix that the missing-file and mismatch messages print.
"""

import os
import re
from typing import (
    TYPE_CHECKING,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from mmfish.utils.mim import config_reference, tool_command

if TYPE_CHECKING:
    from .fishnet import FishNet

CONVERTER = tool_command('model_converters/fishnet2mmdet.py')  # the command, for this install
SHOWN_KEYS = 5  # keys listed per kind in a mismatch message


class ImageNetWeights(NamedTuple):
    """One published ImageNet file of a FishNet variant.

    Attributes:
        arch: The variant, a key of ``FishNet.arch_settings``.
        source: Who publishes it, for messages.
        file: The published file's name (the converter's input).
        top1: ImageNet top-1 (%) as published by the source.
        converted: Where the configs expect the converted file (the converter's output).
    """

    arch: str
    source: str
    file: str
    top1: float
    converted: str


# README, "ImageNet weights" ("Which file to start from"): the files the converter reads.
PUBLISHED_WEIGHTS: Tuple[ImageNetWeights, ...] = (
    ImageNetWeights(
        'fishnet99',
        "the authors' plain file",
        'fishnet99_ckpt.tar',
        77.41,
        'checkpoints/fishnet99_in1k_mmfish.pth',
    ),
    ImageNetWeights(
        'fishnet150',
        "pytorchcv's file, downloaded as README 'ImageNet weights' says",
        'fishnet150-0475-93e26daa.pth',
        80.74,
        'checkpoints/fishnet150_pytorchcv_in1k_mmfish.pth',
    ),
    ImageNetWeights(
        'fishnet150',
        'the authors\' "well-trained" file',
        'fishnet150_ckpt_welltrained.tar',
        79.35,
        'checkpoints/fishnet150_welltrained_in1k_mmfish.pth',
    ),
    ImageNetWeights(
        'fishnet150',
        "the authors' plain file",
        'fishnet150_ckpt.tar',
        78.14,
        'checkpoints/fishnet150_in1k_mmfish.pth',
    ),
)
# Variants without a published file that the converter reads, and why.
NO_PUBLISHED_WEIGHTS: Dict[str, str] = {
    'fishnet201': (
        'No FishNet-201 ImageNet weights are published in a layout the converter reads: the '
        'authors publish only the "well-trained" fishnet201_ckpt_welltrain.tar, which the '
        'converter refuses (it cannot be mapped exactly; README, "ImageNet weights"), no plain '
        'fishnet201_ckpt.tar, and pytorchcv has no FishNet-201 weights. The converter does read '
        "a FishNet-201 checkpoint in the authors' reference layout (e.g. one you trained with "
        f'their code): `{CONVERTER} SOURCE {{path}} --arch fishnet201`.'
    ),
    'fishnext150': (
        'No FishNeXt-150 ImageNet weights exist (the authors published none; README, '
        '"FishNeXt"): load a checkpoint of your own ImageNet training of the same arch.'
    ),
}
# The authors' variants: the converter's, and each has a from-scratch recipe (README, "Training
# from scratch"). FishNeXt-150 has FishNet-150's block counts.
ARCHS: Tuple[str, ...] = ('fishnet99', 'fishnet150', 'fishnet201')
SCRATCH_CONFIG = config_reference('mask_rcnn_{arch}_fpn_gn-all_scratch_6x_coco.py')
# Converted by mmfish: the meta keys the converter writes beside the variant.
_CONVERTER_META = ('arch', 'layout', 'source')
_STAGED = ('tail', 'body', 'head', 'out_norms')
_FISHNET_UNIT_RE = re.compile(r'^(stem|bridge|score|(tail|body|head)\.[0-2]|out_norms\.\d+)$')


class PretrainedMismatchError(ValueError):
    """A ``Pretrained`` checkpoint does not fit the FishNet that would load it."""


def variant_weights(arch: Optional[str]) -> List[ImageNetWeights]:
    """The published files of ``arch``, the strongest first."""
    return [w for w in PUBLISHED_WEIGHTS if w.arch == arch]


def how_to_get_weights(arch: Optional[str], path: str) -> str:
    """What to convert (and with which command) to get ImageNet weights of ``arch`` at ``path``.

    Args:
        arch: A variant name, or None for a custom arch.
        path: Where the model looks for the converted file.
    """
    weights = variant_weights(arch)
    if not weights:
        if arch in NO_PUBLISHED_WEIGHTS:
            return NO_PUBLISHED_WEIGHTS[arch].format(path=path)
        return (
            'No ImageNet weights are published for a custom arch: load a checkpoint of your own '
            'training of the same arch.'
        )
    named = [w for w in weights if os.path.basename(w.converted) == os.path.basename(path)]
    first = named[0] if named else weights[0]  # the file this path names, else the strongest
    others = [w for w in weights if w is not first]
    text = (
        f'Convert {first.file} ({first.source}, {first.top1}% ImageNet top-1'
        + ('; the file this path names' if named else '')
        + f'): `{CONVERTER} {first.file} {path} --arch {arch}`.'
    )
    if others:
        listed = '; '.join(
            f'{w.file} ({w.source}, {w.top1}% top-1), which the configs expect converted to '
            f'{w.converted}'
            for w in others
        )
        text += f' Other published {arch} files: {listed} (README, "ImageNet weights").'
    return text


def how_to_train_from_scratch(model: 'FishNet') -> str:
    """The from-scratch route for ``model``, one sentence."""
    variant = model.variant_name
    if variant in ARCHS:
        config = SCRATCH_CONFIG.format(arch=variant)
    else:  # FishNeXt-150 or a custom arch: FishNet-150's recipe with the model's arch
        config = SCRATCH_CONFIG.format(arch='fishnet150') + (
            f' with --cfg-options model.backbone.arch={variant}' if variant else ' with your arch'
        )
    if model.frozen_stages >= 0 or model.norm_eval:
        return (
            f'To train without ImageNet weights, use a from-scratch recipe, {config} (README, '
            f'"Training from scratch"): init_cfg=None alone would keep frozen_stages='
            f'{model.frozen_stages} and norm_eval={model.norm_eval}, which leave random layers '
            'frozen and norm statistics at their initial values.'
        )
    return (
        'To train without ImageNet weights, set init_cfg=None (this backbone freezes nothing and '
        f'trains its norms); for detection, the full from-scratch recipe is {config} (README, '
        '"Training from scratch").'
    )


def missing_checkpoint_message(model: 'FishNet', path: str) -> str:
    """Why a missing ``Pretrained`` file stops training, and how to make it."""
    return (
        f'FishNet pretrained checkpoint {path!r} not found (cwd: {os.getcwd()}). '
        f'{how_to_get_weights(model.variant_name, path)} {how_to_train_from_scratch(model)}'
    )


# ----------------------------------------------------------------------------- the load check
def block_counts(mmfish_keys: Iterable[str]) -> Dict[str, object]:
    """Block counts in the layout of ``FishNet.arch_settings``, read from mmfish key names."""
    found: Dict[str, int] = {}
    for key in mmfish_keys:
        match = re.match(r'^((?:tail|body|head)\.\d|bridge)\.(blocks|transfer)\.(\d+)\.', key)
        if match:
            group = f'{match.group(1)}.{match.group(2)}'
            found[group] = max(found.get(group, 0), int(match.group(3)) + 1)

    def triple(part: str, kind: str) -> Tuple[int, ...]:
        return tuple(found.get(f'{part}.{i}.{kind}', 0) for i in range(3))

    return dict(
        tail_blocks=triple('tail', 'blocks'),
        bridge_blocks=found.get('bridge.blocks', 0),
        body_blocks=triple('body', 'blocks'),
        head_blocks=triple('head', 'blocks'),
        body_transfer_blocks=triple('body', 'transfer'),
        head_transfer_blocks=triple('head', 'transfer'),
    )


def _unit(key: str) -> str:
    """The part of FishNet a key belongs to: ``stem``, ``tail.1``, ``out_norms.7``, ..."""
    parts = key.split('.')
    return '.'.join(parts[:2]) if parts[0] in _STAGED and len(parts) > 1 else parts[0]


def _listing(keys: Sequence[str]) -> str:
    shown = ', '.join(keys[:SHOWN_KEYS])
    return f'{len(keys)} ({shown}{", ..." if len(keys) > SHOWN_KEYS else ""})'


def backbone_state_dict(
    checkpoint: Mapping, prefix: Optional[str]
) -> Tuple[Dict[str, object], Optional[dict]]:
    """The state dict mmengine's ``Pretrained`` init would load, and the converter's meta.

    As mmengine reads it: ``checkpoint['state_dict']`` (or the checkpoint itself), ``module.``
    stripped without a prefix, else only the keys under ``prefix``, stripped of it. The meta is
    the converter's (a dict with ``arch``, ``layout`` and ``source``) only for a whole file, not
    for a part of one taken by ``prefix``.
    """
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, Mapping):
        state_dict = {}
    meta = checkpoint.get('meta') if 'state_dict' in checkpoint else None
    if prefix is None:
        state_dict = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
    else:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        meta = None
    if not (isinstance(meta, Mapping) and all(key in meta for key in _CONVERTER_META)):
        meta = None
    return state_dict, meta


def variant_of_counts(counts: Mapping[str, object], arch_settings: Mapping) -> Optional[str]:
    """The authors' variant with these block counts (:func:`block_counts`' layout), or None."""
    matches = (a for a in ARCHS if all(counts[k] == arch_settings[a][k] for k in counts))
    return next(matches, None)


def check_pretrained(
    model: 'FishNet', checkpoint: Mapping, path: str, prefix: Optional[str] = None
) -> None:
    """Refuse a ``Pretrained`` checkpoint that would load only in part into ``model``.

    Args:
        model: The FishNet that is about to load the checkpoint.
        checkpoint: The loaded checkpoint file (``torch.load``'s result).
        path: Its path, for messages.
        prefix: ``init_cfg``'s ``prefix`` (e.g. ``'backbone.'`` for a detector's file).

    Raises:
        PretrainedMismatchError: the file records another variant, or its keys or shapes are
            not the model's (beyond the legal differences of the module docstring).
    """
    state_dict, meta = backbone_state_dict(checkpoint, prefix)
    variant = model.variant_name
    model_name = f'FishNet (arch {variant!r})' if variant else 'FishNet (a custom arch)'
    if not state_dict:
        raise PretrainedMismatchError(
            f'{model_name} cannot load the Pretrained checkpoint {path!r}: no key '
            + (f'starts with prefix {prefix!r}.' if prefix else 'holds a tensor.')
            + ' Is it a checkpoint of this network?'
        )

    filled = dict(state_dict)
    model.fill_out_norms(filled)  # out norms from their consumer's keys, as loading does
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    built = {_unit(k) for k in own}
    missing = [
        k
        for k in own
        if k not in filled
        and not k.endswith('.num_batches_tracked')  # old files lack them: loading keeps 0
        and not k.startswith('out_norms.')  # no consumer norm: the model warns, keeps its norm
    ]
    unexpected = [
        k
        for k in filled
        if k not in own and (not _FISHNET_UNIT_RE.match(_unit(k)) or _unit(k) in built)
    ]
    wrong = [
        f'{k} {tuple(getattr(filled[k], "shape", ()))} (model {own[k]})'
        for k in own
        if k in filled and tuple(getattr(filled[k], 'shape', ())) != own[k]
    ]

    recorded = meta['arch'] if meta is not None else None
    other_variant = recorded is not None and recorded != variant
    if not (other_variant or missing or unexpected or wrong):
        return

    holds = recorded or variant_of_counts(block_counts(filled), model.arch_settings)
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
            details.append(f'{label}: {_listing(keys)}')
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
            f'{dict(model.norm_cfg)}; build the backbone with the norm_cfg of the file.'
        )
    else:
        consequence = 'Loaded, it would leave part of the backbone at its random initialisation.'
        fix = f'{how_to_get_weights(variant, path)} {how_to_train_from_scratch(model)}'
    raise PretrainedMismatchError(
        f'{model_name} refuses the Pretrained checkpoint {path!r}: {what}. {consequence} Keys '
        + ('; '.join(details) if details else 'match')
        + '. '
        + ''.join(hint + ' ' for hint in hints)
        + f'Fix: {fix}'
    )


__all__ = [
    'ARCHS',
    'NO_PUBLISHED_WEIGHTS',
    'PUBLISHED_WEIGHTS',
    'ImageNetWeights',
    'PretrainedMismatchError',
    'block_counts',
    'check_pretrained',
    'how_to_get_weights',
    'missing_checkpoint_message',
    'variant_of_counts',
]
