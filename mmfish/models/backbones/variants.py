"""The FishNet variants: their settings, and the published ImageNet files of each.

This is the one table of variants. :class:`~mmfish.models.backbones.fishnet.FishNet` builds
from it (``FishNet.arch_settings`` is :data:`ARCH_SETTINGS`), the converter
(:mod:`mmfish.models.converters`) tells a checkpoint's variant by it, and the check of a
``Pretrained`` file (:mod:`~mmfish.models.backbones.fishnet_pretrained`) names the file to
convert from it.

A variant's settings are its block counts: ``tail_blocks``, ``bridge_blocks``, ``body_blocks``,
``head_blocks``, ``body_transfer_blocks`` and ``head_transfer_blocks``, plus, optionally, its
channels (:data:`REFERENCE_CHANNELS` by default) and its grouped bottleneck (``groups`` and
``group_width``; :data:`PLAIN_BOTTLENECK` by default).
"""

import re
from typing import Dict, Iterable, Mapping, NamedTuple, Optional, Tuple

from mmfish.utils.mim import tool_command

# The authors' variants (github kevin-ssy/FishNet): the reference code's, which the converter
# reads and each of which has a from-scratch recipe.
REFERENCE_ARCH_SETTINGS: Dict[str, dict] = {
    'fishnet99': dict(
        tail_blocks=(2, 2, 6),
        bridge_blocks=2,
        body_blocks=(1, 1, 1),
        head_blocks=(1, 2, 2),
        body_transfer_blocks=(1, 1, 1),
        head_transfer_blocks=(1, 1, 4),
    ),
    'fishnet150': dict(
        tail_blocks=(2, 4, 8),
        bridge_blocks=4,
        body_blocks=(2, 2, 2),
        head_blocks=(2, 2, 4),
        body_transfer_blocks=(2, 2, 2),
        head_transfer_blocks=(2, 2, 4),
    ),
    'fishnet201': dict(
        tail_blocks=(3, 4, 12),
        bridge_blocks=4,
        body_blocks=(2, 2, 2),
        head_blocks=(2, 3, 10),
        body_transfer_blocks=(2, 2, 2),
        head_transfer_blocks=(2, 2, 9),
    ),
}
REFERENCE_ARCHS: Tuple[str, ...] = tuple(REFERENCE_ARCH_SETTINGS)

# Every variant ``FishNet(arch=...)`` accepts by name. FishNeXt-150 (the paper's residual blocks
# "with identity mapping and grouping", as ResNeXt; no reference code): FishNet-150's blocks with
# a grouped 3x3 convolution of 48 groups, 2 channels per group in the blocks working at stride 4,
# doubling with each halving of the resolution (4, 8, 16 at strides 8, 16, 32): bottleneck widths
# 96, 192, 384, 768. 48 groups of 2 is the setting that puts the classifier at about 26M
# parameters as the paper says (26,750,888 with a 1000-class score head; 32 groups of 2 give
# 19.3M, 32 of 3 give 27.6M).
ARCH_SETTINGS: Dict[str, dict] = {
    **REFERENCE_ARCH_SETTINGS,
    'fishnext150': dict(REFERENCE_ARCH_SETTINGS['fishnet150'], groups=48, group_width=2),
}

# The reference's network_planes [64, 128, 256, 512, 512, 512, 384, 256, 320, 832, 1600] are
# shared by all variants: stem, tail (x3), bridge (= last tail), body (x3) and head. The head's
# planes equal its input channels (no channel reduction), so they are derived, not set.
REFERENCE_CHANNELS = dict(
    stem_channels=64, tail_channels=(128, 256, 512), body_channels=(512, 384, 256)
)
# FishNet's bottlenecks: ungrouped, out_channels // 4 wide. FishNeXt sets both (ARCH_SETTINGS).
PLAIN_BOTTLENECK = dict(groups=1, group_width=None)

# The tool that converts published files to mmfish's names, as the messages name it.
CONVERTER = tool_command('model_converters/fishnet2mmdet.py')  # the command, for this install


class ImageNetWeights(NamedTuple):
    """One published ImageNet file of a FishNet variant.

    Attributes:
        arch: The variant, a key of :data:`ARCH_SETTINGS`.
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


# docs/weights.md, "Which file to start from": the files the converter reads.
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
        "pytorchcv's file, downloaded as docs/weights.md says",
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
        'converter refuses (it cannot be mapped exactly; docs/weights.md), no plain '
        'fishnet201_ckpt.tar, and pytorchcv has no FishNet-201 weights. The converter does read '
        "a FishNet-201 checkpoint in the authors' reference layout (e.g. one you trained with "
        f'their code): `{CONVERTER} SOURCE {{path}} --arch fishnet201`.'
    ),
    'fishnext150': (
        'No FishNeXt-150 ImageNet weights exist (the authors published none; '
        'docs/backbone.md, "FishNeXt"): load a checkpoint of your own ImageNet training of the '
        'same arch.'
    ),
}

_BLOCK_KEY_RE = re.compile(r'^((?:tail|body|head)\.\d|bridge)\.(blocks|transfer)\.(\d+)\.')


def block_counts(mmfish_keys: Iterable[str]) -> Dict[str, object]:
    """Block counts in the layout of :data:`ARCH_SETTINGS`, read from mmfish key names."""
    found: Dict[str, int] = {}
    for key in mmfish_keys:
        match = _BLOCK_KEY_RE.match(key)
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


def variant_of_counts(counts: Mapping[str, object]) -> Optional[str]:
    """The authors' variant with these block counts (:func:`block_counts`' layout), or None."""
    matches = (a for a in REFERENCE_ARCHS if all(counts[k] == ARCH_SETTINGS[a][k] for k in counts))
    return next(matches, None)


__all__ = [
    'ARCH_SETTINGS',
    'CONVERTER',
    'NO_PUBLISHED_WEIGHTS',
    'PLAIN_BOTTLENECK',
    'PUBLISHED_WEIGHTS',
    'REFERENCE_ARCHS',
    'REFERENCE_ARCH_SETTINGS',
    'REFERENCE_CHANNELS',
    'ImageNetWeights',
    'block_counts',
    'variant_of_counts',
]
