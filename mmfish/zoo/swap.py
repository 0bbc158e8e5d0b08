"""FishNet in place of the ResNet of any mmdet or mmseg config, every consumer of its channels
rewritten.

A ResNet (``ResNet``, ``ResNetV1c``, ``ResNetV1d``; depth 18 to 152; any ``out_indices``,
``strides`` and ``dilations``) returns one feature per ``out_indices`` entry, at the stride its
stages give it (4, 8, 16, 32 by default; a dilated ResNet keeps 8 or 16 for the last ones).
FishNet returns, for each of them, one of its own features at the **same stride**
(:func:`fishnet_out_indices`): it has three or more features at each of the strides 8, 16 and
32 and two at 4 (docs/backbone.md), so where several ResNet outputs share a stride (the dilated
ResNets of mmseg), the deeper output gets the deeper FishNet feature. Nothing that depends on
the strides (anchors, RoI extractors, decoders' upsampling) changes; only the channel counts do.

Who reads the backbone's channels is found by rules, one per consumer type (:data:`NECKS`,
:data:`SEG_HEADS`, :data:`DET_HEADS`), never by looking for lists equal to the ResNet's: a neck
(the first of a list of necks) consumes the backbone, and its outputs are its own, except for
those it passes through (FastFCN's JPU hands two backbone features on to the heads); mmseg's
decode and auxiliary heads take the neck's, or the backbone's, outputs by ``in_index``; an
mmdet model without a neck feeds its heads directly (Mask2Former, C4 RPN). A channel count that
does not equal what the ResNet gives there, or a consumer without a rule, is a
:class:`SwapError` that names the config key: never a silently wrong channel count.

:func:`swap_backbone` returns a :class:`Swap`: the changes, and :meth:`Swap.text`, a config
that inherits the original (``_base_``, ``mmdet::`` / ``mmseg::`` names for the installed
toolboxes' configs) and states only what changed. ``tools/misc/swap_backbone.py`` writes it;
docs/zoo.md says how, and which model families train with it.
"""

import copy
import os
import os.path as osp
import textwrap
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.config.utils import _get_package_and_cfg_path

from mmfish.models.backbones.fishnet import NUM_FEATURES, FishNet
from mmfish.models.backbones.variants import NO_PUBLISHED_WEIGHTS, PUBLISHED_WEIGHTS
from mmfish.utils.errors import UserInputError
from mmfish.utils.mim import resolve_config

RESNET_TYPES = ('ResNet', 'ResNetV1c', 'ResNetV1d')
TOOLBOXES = ('mmdet', 'mmseg')
# The FishNet family's settings (configs/_base_/fishnet150_fpn.py): gradient clipping for
# detectors; GroupNorm with 16 groups (FishNet's 80, 208, 400 channels are not multiples of 32).
CLIP_GRAD = dict(max_norm=35, norm_type=2)
GN_GROUPS = 16
SIZE_DIVISOR = 32
# The normalisation of FishNet's ImageNet training (and of mmdet's and mmseg's pytorch-style
# configs).
IMAGENET_NORMALISATION = dict(
    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True
)
# Model keys that are not consumers of the backbone's features.
NOT_CONSUMERS = frozenset(
    {'type', 'backbone', 'neck', 'data_preprocessor', 'train_cfg', 'test_cfg', 'init_cfg',
     'pretrained', 'panoptic_fusion_head', 'encoder', 'decoder', 'positional_encoding',
     'dn_cfg', 'semi_train_cfg', 'semi_test_cfg'}
)  # fmt: skip


class SwapError(UserInputError):
    """A config that the swap cannot rewrite; the message names the key and the fix."""


class Feature(NamedTuple):
    """A backbone feature as a consumer sees it: the ResNet's channels and FishNet's."""

    resnet: int
    fishnet: int


# What a consumer gets at each of its inputs: a backbone feature, or None for a feature that is
# not the backbone's (a neck's own), whose channels the swap does not change.
Inputs = List[Optional[Feature]]


# ------------------------------------------------------------------------------- the backbones
def backbone_type(backbone: Mapping) -> str:
    """The backbone's class name, without a registry scope (``mmdet.ResNet`` -> ``ResNet``)."""
    return str(backbone.get('type', '')).split('.')[-1]


def resnet_outputs(backbone: Mapping) -> List[Tuple[int, int]]:
    """``(channels, stride)`` of each output of a ResNet config, in ``out_indices`` order."""
    depth = backbone.get('depth')
    if depth not in (18, 34, 50, 101, 152):
        raise SwapError(
            f'model.backbone.depth={depth!r}: the swap knows ResNet depths 18, 34, 50, 101 '
            'and 152'
        )
    expansion = 1 if depth < 50 else 4
    base = backbone.get('base_channels', 64)
    num_stages = backbone.get('num_stages', 4)
    strides = tuple(backbone.get('strides', (1, 2, 2, 2)))[:num_stages]
    out_indices = backbone.get('out_indices', (0, 1, 2, 3))
    out_indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
    stage_strides, stride = [], 4  # the stem: a stride-2 convolution and a stride-2 max pool
    for s in strides:
        stride *= s
        stage_strides.append(stride)
    outputs = []
    for i in out_indices:
        if not 0 <= i < num_stages:
            raise SwapError(f'model.backbone.out_indices={out_indices}: {i} is not a stage')
        outputs.append((base * 2**i * expansion, stage_strides[i]))
    return outputs


@cache
def fishnet_features(arch: str) -> Tuple[Tuple[int, int], ...]:
    """``(channels, stride)`` of each of FishNet's features, by index (``FishNet.feature_info``).

    Built on the meta device: only the shapes are computed, no weights.
    """
    with torch.device('meta'):
        model = FishNet(arch=arch, out_indices=(NUM_FEATURES - 1,))
    return tuple((f['channels'], f['stride']) for f in model.feature_info)


def fishnet_out_indices(strides: Sequence[int], arch: str = 'fishnet150') -> Tuple[int, ...]:
    """FishNet's features at the given strides, one per stride entry, all different.

    Each stride gets the deepest FishNet feature at that stride (the head's, which hold
    features of every depth); when several entries share a stride, the later (deeper) entry
    gets the deeper feature: ``(4, 8, 8, 8)`` (a ResNet-D8) is ``(7, 1, 6, 8)``.
    """
    by_stride: Dict[int, List[int]] = {}
    for index, (_, stride) in enumerate(fishnet_features(arch)):
        by_stride.setdefault(stride, []).append(index)
    chosen: List[Optional[int]] = [None] * len(strides)
    for stride in sorted(set(strides)):
        positions = [p for p, s in enumerate(strides) if s == stride]
        candidates = by_stride.get(stride, [])
        if len(positions) > len(candidates):
            raise SwapError(
                f'model.backbone: {len(positions)} outputs at stride {stride}, but FishNet has '
                f'{len(candidates)} features at that stride (strides {sorted(by_stride)}): '
                'return fewer outputs at that stride (out_indices)'
            )
        # the last positions (deepest ResNet outputs) get the deepest features
        for position, index in zip(
            positions, sorted(candidates)[len(candidates) - len(positions) :]
        ):
            chosen[position] = index
    return tuple(chosen)  # type: ignore[arg-type]


def default_checkpoint(arch: str) -> str:
    """Where the configs expect the converted ImageNet file of ``arch`` (docs/weights.md)."""
    for weights in PUBLISHED_WEIGHTS:
        if weights.arch == arch:
            return weights.converted
    raise SwapError(
        f'{NO_PUBLISHED_WEIGHTS.get(arch, f"no ImageNet weights of {arch}")} Or swap without '
        'an ImageNet start (--no-pretrained).'
    )


def _resnet_was_pretrained(model: Mapping) -> bool:
    init = model['backbone'].get('init_cfg') or {}
    return bool(model.get('pretrained')) or (
        isinstance(init, Mapping) and init.get('type') == 'Pretrained'
    )


def _frozen_stages(resnet_frozen: int, last: int) -> int:
    """FishNet's ``frozen_stages`` for a ResNet's: the stem and as many tail stages (features
    ``0..k``: stem, tail.0, ...); a ResNet frozen entirely freezes every built FishNet stage."""
    return resnet_frozen if resnet_frozen < 4 else last


def _fishnet_backbone(
    resnet: Mapping, out_indices: Tuple[int, ...], arch: str, checkpoint: Optional[str]
) -> dict:
    # The ResNet's norm layer and whether it trains; not its caffe-style settings (eps=0 for
    # frozen statistics) nor its group count (GN: FishNet's 80, 208, 400 channels).
    resnet_norm = resnet.get('norm_cfg') or dict(type='BN', requires_grad=True)
    norm_cfg = dict(type=resnet_norm.get('type', 'BN'))
    if 'requires_grad' in resnet_norm:
        norm_cfg['requires_grad'] = resnet_norm['requires_grad']
    if norm_cfg['type'] == 'GN':
        norm_cfg['num_groups'] = GN_GROUPS
    if checkpoint is None:
        # From scratch: nothing frozen, norms trained (FishNet's docstring, init_cfg).
        frozen, norm_eval, init_cfg = -1, False, None
        norm_cfg['requires_grad'] = True
    else:
        frozen = _frozen_stages(resnet.get('frozen_stages', -1), max(out_indices))
        norm_eval = resnet.get('norm_eval', True)
        init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
    return dict(
        _delete_=True,
        type='FishNet',
        arch=arch,
        out_indices=out_indices,
        out_norm=True,
        frozen_stages=frozen,
        norm_cfg=norm_cfg,
        norm_eval=norm_eval,
        init_cfg=init_cfg,
    )


# ------------------------------------------------------------------------------ consumer rules
@dataclass
class Rewrite:
    """What a rule found: the changed keys of the consumer's config, and what it hands on."""

    changes: Dict[str, Any] = field(default_factory=dict)
    # The consumer's outputs as the next consumers see them; None: all its own.
    outputs: Optional[Inputs] = None


def _check(key: str, given: Any, feature: Optional[Feature]) -> Any:
    """The FishNet value of a channel count ``given`` that reads ``feature``."""
    if feature is None:
        return given
    if given != feature.resnet:
        raise SwapError(
            f'{key}={given!r}, but the ResNet feature it reads has {feature.resnet} channels: '
            'the swap cannot tell what this count is; make it match the backbone, or rewrite '
            f'it by hand (FishNet gives {feature.fishnet} channels there)'
        )
    return feature.fishnet


def _as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _same_type(original: Any, values: List[Any]) -> Any:
    return tuple(values) if isinstance(original, tuple) else values


def aligned(cfg: Mapping, inputs: Inputs, key: str, record: List[str]) -> Rewrite:
    """``in_channels`` lists the channels of every input, in order (FPN, ChannelMapper, ...)."""
    given = cfg.get('in_channels')
    if not isinstance(given, (list, tuple)) or len(given) != len(inputs):
        raise SwapError(
            f'{key}.in_channels={given!r}: expected one channel count per backbone output '
            f'({len(inputs)}); make it match the backbone, or rewrite it by hand'
        )
    values = [
        _check(f'{key}.in_channels[{i}]', c, f) for i, (c, f) in enumerate(zip(given, inputs))
    ]
    changed = values != list(given)
    return Rewrite({'in_channels': _same_type(given, values)} if changed else {})


def last_input(cfg: Mapping, inputs: Inputs, key: str, record: List[str]) -> Rewrite:
    """``in_channels`` is an int, the last input's channels (CenterNet's, YOLOF's necks)."""
    value = _check(f'{key}.in_channels', cfg.get('in_channels'), inputs[-1])
    return Rewrite({'in_channels': value} if value != cfg.get('in_channels') else {})


def every_input(cfg: Mapping, inputs: Inputs, key: str, record: List[str]) -> Rewrite:
    """``in_channels`` is an int, every input's channels (an RPN head on a C4 backbone)."""
    values = {_check(f'{key}.in_channels', cfg.get('in_channels'), f) for f in inputs}
    if len(values) != 1:
        raise SwapError(
            f'{key}.in_channels: one count for inputs that FishNet gives different channel '
            f'counts ({sorted(values)}): feed it through a neck (e.g. ChannelMapper)'
        )
    value = values.pop()
    return Rewrite({'in_channels': value} if value != cfg.get('in_channels') else {})


def jpu(cfg: Mapping, inputs: Inputs, key: str, record: List[str]) -> Rewrite:
    """FastFCN's JPU: ``in_channels`` per input; it hands on the inputs from ``start_level`` to
    the one before the last it fuses, then its own fused feature."""
    rewrite = aligned(cfg, inputs, key, record)
    start = cfg.get('start_level', 0)
    end = cfg.get('end_level', -1)
    end = len(inputs) if end == -1 else end
    rewrite.outputs = [*inputs[start : end - 1], None]
    return rewrite


def passthrough(cfg: Mapping, inputs: Inputs, key: str, record: List[str]) -> Rewrite:
    """A neck without channel settings that hands every input on (a global pooling)."""
    return Rewrite(outputs=list(inputs))


def by_index(cfg: Mapping, inputs: Inputs, key: str, record: List[str]) -> Rewrite:
    """mmseg's decode heads: ``in_channels`` of the inputs that ``in_index`` selects."""
    index, given = cfg.get('in_index', -1), cfg.get('in_channels')
    indices, counts = _as_list(index), _as_list(given)
    if len(indices) != len(counts):
        raise SwapError(f'{key}: in_index={index!r} and in_channels={given!r} differ in length')
    try:
        features = [inputs[i] for i in indices]
    except IndexError:
        raise SwapError(f'{key}.in_index={index!r}: only {len(inputs)} inputs') from None
    values = [_check(f'{key}.in_channels', c, f) for c, f in zip(counts, features)]
    new = _same_type(given, values) if isinstance(given, (list, tuple)) else values[0]
    return Rewrite({'in_channels': new} if values != counts else {})


def aspp_plus(cfg: Mapping, inputs: Inputs, key: str, record: List[str]) -> Rewrite:
    """DeepLabV3+: :func:`by_index`, and ``c1_in_channels``, the first input's (stride 4)."""
    rewrite = by_index(cfg, inputs, key, record)
    c1 = _check(f'{key}.c1_in_channels', cfg.get('c1_in_channels'), inputs[0])
    if c1 != cfg.get('c1_in_channels'):
        rewrite.changes['c1_in_channels'] = c1
    return rewrite


def iterative(cfg: Mapping, inputs: Inputs, key: str, record: List[str]) -> Rewrite:
    """K-Net's IterativeDecodeHead: its ``kernel_generate_head`` reads the inputs."""
    inner = cfg.get('kernel_generate_head')
    changes = _consumer(inner, inputs, f'{key}.kernel_generate_head', SEG_HEADS, record).changes
    return Rewrite({'kernel_generate_head': changes} if changes else {})


Rule = Callable[[Mapping, Inputs, str, List[str]], Rewrite]

# Necks: mmdet's and mmseg's that read a ResNet's outputs (DyHead, BFP and the like come after
# an FPN and read its outputs, which the swap does not change).
NECKS: Dict[str, Rule] = {
    **dict.fromkeys(
        ['FPN', 'PAFPN', 'FPN_CARAFE', 'NASFPN', 'NASFCOS_FPN', 'FPG', 'ChannelMapper', 'HRFPN',
         'SSH', 'MultiLevelNeck'],
        aligned,
    ),
    'CTResNetNeck': last_input,
    'DilatedEncoder': last_input,
    'JPU': jpu,
    'GlobalAveragePooling': passthrough,
}  # fmt: skip
# mmseg's decode and auxiliary heads.
SEG_HEADS: Dict[str, Rule] = {
    **dict.fromkeys(
        ['FCNHead', 'PSPHead', 'ASPPHead', 'ANNHead', 'APCHead', 'CCHead', 'DAHead', 'DMHead',
         'DNLHead', 'EMAHead', 'EncHead', 'GCHead', 'ISAHead', 'NLHead', 'OCRHead', 'PSAHead',
         'UPerHead', 'FPNHead', 'PointHead', 'SegformerHead', 'MaskFormerHead'],
        by_index,
    ),
    'DepthwiseSeparableASPPHead': aspp_plus,
    'Mask2FormerHead': aligned,
    'IterativeDecodeHead': iterative,
}  # fmt: skip
# mmdet's heads that read the backbone when the model has no neck.
DET_HEADS: Dict[str, Rule] = {
    'Mask2FormerHead': aligned,
    'MaskFormerHead': aligned,
    'Mask2FormerTrackHead': aligned,
    'RPNHead': every_input,
    'LinearReIDHead': last_input,
}


def _consumer(
    cfg: Any, inputs: Inputs, key: str, rules: Mapping[str, Rule], record: List[str]
) -> Rewrite:
    """Apply the rule of ``cfg``'s type; add the channel keys it changed to ``record``."""
    kind = str(cfg.get('type', '')).split('.')[-1] if isinstance(cfg, Mapping) else ''
    if all(f is None for f in inputs):
        return Rewrite()  # reads no backbone feature
    rule = rules.get(kind)
    if rule is None:
        raise SwapError(
            f'{key} (type {kind or cfg!r}) reads the backbone\'s features, and the swap has no '
            f'rule for {kind or "it"} (it knows {", ".join(sorted(rules))}): set its channels '
            'by hand from FishNet.out_channels'
        )
    rewrite = rule(cfg, inputs, key, record)
    record.extend(f'{key}.{k}' for k, v in rewrite.changes.items() if not isinstance(v, Mapping))
    return rewrite


def _plain(value: Any) -> Any:
    """A config value as plain dicts and lists, without the ``_scope_`` keys bases add."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _rewrite_heads(
    model: Mapping, inputs: Inputs, toolbox: str, prefix: str, record: List[str]
) -> Dict[str, Any]:
    changes: Dict[str, Any] = {}
    if toolbox == 'mmseg':
        for name in ('decode_head', 'auxiliary_head'):
            heads = model.get(name)
            if not heads:
                continue
            if isinstance(heads, (list, tuple)):
                found = [
                    _consumer(h, inputs, f'{prefix}{name}[{i}]', SEG_HEADS, record).changes
                    for i, h in enumerate(heads)
                ]
                if any(found):  # a list is replaced whole when it is inherited
                    changes[name] = [_merge(_plain(h), c) for h, c in zip(heads, found)]
            else:
                found = _consumer(heads, inputs, f'{prefix}{name}', SEG_HEADS, record).changes
                if found:
                    changes[name] = found
        return changes
    for name, value in model.items():
        if name in NOT_CONSUMERS or not isinstance(value, Mapping) or 'type' not in value:
            continue
        found = _consumer(value, inputs, f'{prefix}{name}', DET_HEADS, record).changes
        if found:
            changes[name] = found
    return changes


def _merge(base: dict, changes: Mapping) -> dict:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------------------------- the swap
@dataclass
class Swap:
    """A config's ResNet swapped for FishNet: what changed, and the config that says it.

    Attributes:
        base: The original config as the written one's ``_base_`` names it.
        toolbox: ``'mmdet'`` or ``'mmseg'``.
        resnet: The swapped backbone, e.g. ``'ResNetV1c-50'``.
        arch: The FishNet variant.
        strides: The stride of each output (the same for both backbones).
        resnet_channels: The ResNet's channels of each output.
        out_indices: FishNet's features in their place.
        fishnet_channels: Their channels.
        changes: The written config's top-level keys and values (``model``, ``optim_wrapper``).
        rewritten: The consumer keys whose channels changed, dotted.
    """

    base: str
    toolbox: str
    resnet: str
    arch: str
    strides: Tuple[int, ...]
    resnet_channels: Tuple[int, ...]
    out_indices: Tuple[int, ...]
    fishnet_channels: Tuple[int, ...]
    changes: Dict[str, Any]
    rewritten: List[str]

    def text(self) -> str:
        """The config, inheriting ``base`` and stating only what changed."""
        name = (
            f'FishNet-{self.arch[len("fishnet"):]}'
            if self.arch.startswith('fishnet')
            else self.arch
        )
        rewritten = ', '.join(self.rewritten) or 'none (the neck reads no channel list)'
        header = (
            f'{self.base} with {name} in place of its {self.resnet}, at the same strides '
            f"(written by tools/misc/swap_backbone.py; docs/zoo.md). The ResNet's outputs "
            f'(strides {_join(self.strides)}; channels {_join(self.resnet_channels)}) are '
            f"FishNet's features {_join(self.out_indices)} (channels "
            f'{_join(self.fishnet_channels)}). Channels rewritten: {rewritten}.'
        )
        lines = [
            *textwrap.wrap(header, 98, initial_indent='# ', subsequent_indent='# '),
            f'_base_ = {self.base!r}',
            "custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)",
        ]
        lines += [f'{key} = {format_value(value)}' for key, value in self.changes.items()]
        return '\n'.join(lines) + '\n'

    def config(self, directory: Optional[str] = None) -> Config:
        """The swapped config, read back from :meth:`text` as mmengine reads the file."""
        import tempfile

        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            path = osp.join(tmp, 'swapped.py')
            with open(path, 'w', encoding='utf-8') as f:
                f.write(self.text())
            return Config.fromfile(path)


def _join(values: Sequence[int]) -> str:
    return ', '.join(str(v) for v in values)


def _model_with_backbone(cfg: Config) -> Tuple[Mapping, List[str]]:
    """The model dict that holds the backbone (``model``, or ``model.detector`` of semi-
    supervised and tracking models) and its path of keys."""
    model = cfg.get('model')
    if (
        isinstance(model, Mapping)
        and 'backbone' not in model
        and isinstance(model.get('detector'), Mapping)
    ):
        return model['detector'], ['model', 'detector']
    if not isinstance(model, Mapping) or not isinstance(model.get('backbone'), Mapping):
        raise SwapError('the config has no model.backbone: name a detector or segmentor config')
    return model, ['model']


def toolbox_of(cfg: Config, source: str = '') -> str:
    """``'mmdet'`` or ``'mmseg'``: the config's ``default_scope`` (or its ``pkg::`` name)."""
    scope = cfg.get('default_scope') or source.split('::')[0]
    if scope not in TOOLBOXES:
        raise SwapError(
            f'default_scope={scope!r}: the swap rewrites mmdet and mmseg configs '
            "(default_scope 'mmdet' or 'mmseg')"
        )
    return scope


def swap_backbone(
    cfg: Config,
    base: str,
    arch: str = 'fishnet150',
    checkpoint: Optional[str] = 'default',
) -> Swap:
    """Swap the ResNet of ``cfg`` for FishNet at the same strides.

    Args:
        cfg: The original config (as ``Config.fromfile`` reads it).
        base: How the written config names the original in ``_base_``
            (``'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'``, a path).
        arch: The FishNet variant.
        checkpoint: The converted ImageNet file (``init_cfg`` Pretrained); ``'default'``: the
            one the mmfish configs name for ``arch``; None: no ImageNet start (from scratch:
            nothing frozen, norms trained).

    Raises:
        SwapError: The backbone is not a ResNet, or a consumer of its channels is not known.
    """
    toolbox = toolbox_of(cfg, base)
    model, path = _model_with_backbone(cfg)
    resnet = model['backbone']
    kind = backbone_type(resnet)
    if kind not in RESNET_TYPES:
        raise SwapError(
            f'{".".join(path)}.backbone is {resnet.get("type")!r}, not a ResNet: the swap '
            f'replaces {", ".join(RESNET_TYPES)} (depth 18-152); for another backbone set '
            "FishNet and its consumers' channels by hand (docs/zoo.md)"
        )
    if arch not in FishNet.arch_settings:
        raise SwapError(f'arch {arch!r}: choose one of {", ".join(FishNet.arch_settings)}')
    if checkpoint == 'default':
        checkpoint = default_checkpoint(arch) if _resnet_was_pretrained(model) else None
    outputs = resnet_outputs(resnet)
    strides = tuple(s for _, s in outputs)
    out_indices = fishnet_out_indices(strides, arch)
    features = fishnet_features(arch)
    inputs: Inputs = [Feature(c, features[i][0]) for (c, _), i in zip(outputs, out_indices)]

    prefix = '.'.join(path) + '.'
    record: List[str] = []  # the rewritten channel keys
    changes: Dict[str, Any] = {'backbone': _fishnet_backbone(resnet, out_indices, arch, checkpoint)}
    if toolbox == 'mmseg' and model.get('pretrained'):
        changes['pretrained'] = None  # the ResNet's weights
    preprocessor = _preprocessor_changes(model.get('data_preprocessor') or {}, toolbox)
    if preprocessor:
        changes['data_preprocessor'] = preprocessor
    neck = model.get('neck')
    if neck:
        necks = list(neck) if isinstance(neck, (list, tuple)) else [neck]
        key = f'{prefix}neck' + ('[0]' if isinstance(neck, (list, tuple)) else '')
        rewrite = _consumer(necks[0], inputs, key, NECKS, record)
        if rewrite.changes:
            if isinstance(neck, (list, tuple)):  # a list is replaced whole when inherited
                changes['neck'] = [_merge(_plain(necks[0]), rewrite.changes)] + [
                    _plain(n) for n in necks[1:]
                ]
            else:
                changes['neck'] = rewrite.changes
        inputs = rewrite.outputs or []
        for i, later in enumerate(necks[1:], 1):
            _consumer(later, inputs, f'{prefix}neck[{i}]', NECKS, record)
    changes.update(_rewrite_heads(model, inputs, toolbox, prefix, record))

    written: Dict[str, Any] = {}
    nested: Dict[str, Any] = changes
    for part in reversed(path[1:]):
        nested = {part: nested}
    written['model'] = nested
    optim_wrapper = cfg.get('optim_wrapper') or {}
    if toolbox == 'mmdet' and not optim_wrapper.get('clip_grad'):
        # clip_grad=None in the recipe is replaced, not merged into
        replaced = {'_delete_': True} if 'clip_grad' in optim_wrapper else {}
        written['optim_wrapper'] = dict(clip_grad=dict(replaced, **CLIP_GRAD))
    depth = resnet.get('depth')
    return Swap(
        base=base,
        toolbox=toolbox,
        resnet=f'{kind}-{depth}',
        arch=arch,
        strides=strides,
        resnet_channels=tuple(c for c, _ in outputs),
        out_indices=out_indices,
        fishnet_channels=tuple(features[i][0] for i in out_indices),
        changes=written,
        rewritten=record,
    )


def _preprocessor_changes(preprocessor: Mapping, toolbox: str) -> Dict[str, Any]:
    """ImageNet's RGB normalisation, which FishNet's ImageNet weights expect (a caffe-style
    ResNet's BGR mean without std is not), and padding to multiples of 32, which FishNet needs
    (its body and head concatenate features of matching sizes)."""
    changes: Dict[str, Any] = {
        k: v for k, v in IMAGENET_NORMALISATION.items() if _plain(preprocessor.get(k)) != v
    }
    if toolbox == 'mmdet':
        if preprocessor.get('pad_size_divisor', 1) % SIZE_DIVISOR:
            changes['pad_size_divisor'] = SIZE_DIVISOR
        return changes
    size = preprocessor.get('size')
    if size is not None and any(s % SIZE_DIVISOR for s in size):
        changes.update(size=None, size_divisor=SIZE_DIVISOR)  # e.g. 769 x 769 crops
    test_cfg = preprocessor.get('test_cfg') or {}
    if (test_cfg.get('size_divisor') or 1) % SIZE_DIVISOR or test_cfg.get('size'):
        changes['test_cfg'] = dict(size_divisor=SIZE_DIVISOR)
    return changes


# ------------------------------------------------------------------------ reading and writing
def config_reference(path: str) -> str:
    """How a config is named in ``_base_``: ``mmdet::x/y.py`` inside an installed toolbox's
    ``.mim/configs`` (where mmengine reads the name), else its absolute path."""
    if '::' in path:
        return path
    path = osp.realpath(path)
    for toolbox in TOOLBOXES:
        try:
            package = __import__(toolbox)
        except ImportError:
            continue
        configs = osp.realpath(osp.join(osp.dirname(package.__file__), '.mim', 'configs'))
        name = f'{toolbox}::{osp.relpath(path, configs)}'
        if path.startswith(configs + os.sep) and _readable_name(name):
            return name
    return path


def _readable_name(name: str) -> bool:
    """Whether mmengine reads ``pkg::NAME`` (it refuses folders such as ``gn+ws``)."""
    try:
        _get_package_and_cfg_path(name)
    except ValueError:
        return False
    return True


def load(config: str) -> Tuple[Config, str]:
    """Read a config given as a path or an ``mmdet::`` / ``mmseg::`` name; and its reference."""
    try:
        path = resolve_config(config)
        return Config.fromfile(path), config if '::' in config else config_reference(path)
    except FileNotFoundError as error:
        raise SwapError(f'{config}: no such config ({error})') from None


def format_value(value: Any, indent: int = 0, width: int = 100) -> str:
    """A config value as Python source: ``dict(...)`` calls, lists and literals, one line when
    it fits in ``width`` columns, else one item a line."""
    pad, inner = ' ' * indent, ' ' * (indent + 4)
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            items = [f'{k}={format_value(v, indent + 4, width)}' for k, v in value.items()]
            opening, closing = 'dict(', ')'
        else:
            items = [f'{k!r}: {format_value(v, indent + 4, width)}' for k, v in value.items()]
            opening, closing = '{', '}'
    elif isinstance(value, (list, tuple)):
        items = [format_value(v, indent + 4, width) for v in value]
        opening, closing = ('[', ']') if isinstance(value, list) else ('(', ')')
        if isinstance(value, tuple) and len(value) == 1:
            items[0] += ','
    else:
        return repr(value)
    one_line = opening + ', '.join(items) + closing
    if '\n' not in one_line and len(one_line) + indent <= width - 10:
        return one_line
    body = ''.join(f'\n{inner}{item},' for item in items)
    return f'{opening}{body}\n{pad}{closing}'


__all__ = [
    'CLIP_GRAD',
    'DET_HEADS',
    'NECKS',
    'RESNET_TYPES',
    'SEG_HEADS',
    'Feature',
    'Swap',
    'SwapError',
    'config_reference',
    'default_checkpoint',
    'fishnet_features',
    'fishnet_out_indices',
    'format_value',
    'load',
    'resnet_outputs',
    'swap_backbone',
]
