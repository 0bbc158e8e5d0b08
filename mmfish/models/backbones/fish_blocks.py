"""Building blocks of FishNet (Sun et al., NeurIPS 2018).

Every block is pre-activation: norm and ReLU come before each convolution and nothing follows the
residual addition, so the features that flow between blocks (and out of the backbone) are not
normalised. Names follow the paper: a stage has ``blocks`` (its trunk), an optional ``transfer``
(the horizontal connection that brings an earlier feature) and a sampler (``pool`` or
``upsample``); the body's up-sampling blocks shorten their shortcut with the parameter-free
channel-wise reduction r(x), the head's down-sampling uses a 2x2 max pool and no convolution.
"""

from typing import List, Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from mmfish.utils.typing import ConfigType, OptConfigType

from ..layers.channel_reduction import channel_reduction


def build_norm(norm_cfg: ConfigType, num_features: int) -> nn.Module:
    """Build a norm layer, with a clear message when GroupNorm cannot split the channels."""
    if norm_cfg.get('type') == 'GN':
        num_groups = norm_cfg.get('num_groups')
        if num_groups is not None and num_features % num_groups != 0:
            raise ValueError(
                f'norm_cfg={norm_cfg}: a FishNet layer has {num_features} channels, which '
                f'{num_groups} groups do not divide. FishNet has layers of 80, 208 and 400 '
                "channels: use dict(type='GN', num_groups=16) (or 8, 4...)."
            )
    return build_norm_layer(norm_cfg, num_features)[1]


def norm_act_conv(
    in_channels: int,
    out_channels: int,
    norm_cfg: ConfigType,
    conv_cfg: OptConfigType = None,
    kernel_size: int = 1,
    dilation: int = 1,
) -> nn.Sequential:
    """Pre-activation unit: norm -> ReLU -> conv (no bias), 'same' padding."""
    return nn.Sequential(
        build_norm(norm_cfg, in_channels),
        nn.ReLU(inplace=True),
        build_conv_layer(
            conv_cfg,
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            bias=False,
        ),
    )


class PreActBottleneck(BaseModule):
    """Pre-activation bottleneck: (norm-ReLU-conv) x 3 plus a shortcut, nothing after the add.

    The middle 3x3 convolution works on ``mid_channels`` channels: ``out_channels // 4`` in
    FishNet; in FishNeXt it is ``groups`` x a group width and the 3x3 convolution is grouped
    (ResNeXt's "aggregated transformations"). The shortcut is, by ``shortcut``:

    - ``'auto'``: identity when the channels match, else norm-ReLU-conv1x1 (a projection);
    - ``'reduction'``: the channel-wise reduction r(x) summing ``in_channels // out_channels``
      adjacent channels (the first block of a body stage, UR block): no parameters, so the
      gradient reaches the earlier layers unchanged.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        dilation: Dilation (and padding) of the 3x3 convolution.
        shortcut: ``'auto'`` or ``'reduction'``.
        mid_channels: Channels of the bottleneck (the 3x3 convolution); None is
            ``out_channels // 4``, FishNet's.
        groups: Groups of the 3x3 convolution; they must divide ``mid_channels``.
        norm_cfg: Norm layer config.
        conv_cfg: Conv layer config (None: ``nn.Conv2d``).
        with_cp: Gradient checkpointing: recompute the block in backward to save memory.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilation: int = 1,
        shortcut: str = 'auto',
        mid_channels: Optional[int] = None,
        groups: int = 1,
        norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
        conv_cfg: OptConfigType = None,
        with_cp: bool = False,
        init_cfg: OptConfigType = None,
    ) -> None:
        super().__init__(init_cfg)
        if shortcut not in ('auto', 'reduction'):
            raise ValueError(f"shortcut must be 'auto' or 'reduction', got {shortcut!r}")
        if shortcut == 'reduction' and in_channels % out_channels != 0:
            raise ValueError(
                f'channel reduction needs in_channels ({in_channels}) to be a multiple of '
                f'out_channels ({out_channels})'
            )
        if mid_channels is None:
            mid_channels = out_channels // 4
        if groups < 1 or mid_channels % groups != 0:
            raise ValueError(
                f'a grouped bottleneck needs groups ({groups}) to divide its width '
                f'({mid_channels} channels): in a FishNet arch dict, set group_width too '
                '(the width is then groups x group_width x stride / 4), or choose other groups'
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.with_cp = with_cp
        # Registration order matters: each conv is directly followed by the norm that consumes
        # its output, so mmcv's fuse_conv_bn may fold (conv1, norm2) and (conv2, norm3).
        self.norm1 = build_norm(norm_cfg, in_channels)
        self.conv1 = build_conv_layer(conv_cfg, in_channels, mid_channels, 1, bias=False)
        self.norm2 = build_norm(norm_cfg, mid_channels)
        self.conv2 = build_conv_layer(
            conv_cfg,
            mid_channels,
            mid_channels,
            3,
            padding=dilation,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.norm3 = build_norm(norm_cfg, mid_channels)
        self.conv3 = build_conv_layer(conv_cfg, mid_channels, out_channels, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)

        self.reduction_k = in_channels // out_channels if shortcut == 'reduction' else 1
        if shortcut == 'auto' and in_channels != out_channels:
            self.projection = norm_act_conv(in_channels, out_channels, norm_cfg, conv_cfg)
        else:
            self.projection = None

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        out = self.conv3(self.relu(self.norm3(out)))
        if self.projection is not None:
            identity = self.projection(x)
        else:
            identity = channel_reduction(x, self.reduction_k)
        # In place: conv3's output is not needed by autograd, and a new tensor would cost an
        # allocation (page faults on CPU) as large as the block's output.
        out += identity
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


def make_blocks(
    in_channels: int,
    out_channels: int,
    num_blocks: int,
    dilation: int = 1,
    first_shortcut: str = 'auto',
    **block_kwargs,
) -> nn.Sequential:
    """A stack of ``num_blocks`` bottlenecks; the first one changes the channels."""
    if num_blocks < 1:
        raise ValueError(f'a FishNet stage needs at least one block, got {num_blocks}')
    blocks: List[nn.Module] = [
        PreActBottleneck(
            in_channels, out_channels, dilation=dilation, shortcut=first_shortcut, **block_kwargs
        )
    ]
    for _ in range(1, num_blocks):
        blocks.append(
            PreActBottleneck(out_channels, out_channels, dilation=dilation, **block_kwargs)
        )
    return nn.Sequential(*blocks)


class Stem(nn.Sequential):
    """Three conv3x3-norm-ReLU (the first with stride 2) and a 3x3 max pool: stride 4."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm_cfg: ConfigType,
        conv_cfg: OptConfigType = None,
    ) -> None:
        mid_channels = out_channels // 2
        layers: List[nn.Module] = []
        for i, (cin, cout) in enumerate(
            [
                (in_channels, mid_channels),
                (mid_channels, mid_channels),
                (mid_channels, out_channels),
            ]
        ):
            layers += [
                build_conv_layer(
                    conv_cfg, cin, cout, 3, stride=2 if i == 0 else 1, padding=1, bias=False
                ),
                build_norm(norm_cfg, cout),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        super().__init__(*layers)


class TailStage(BaseModule):
    """A tail stage: residual blocks, then 2x2 max pool (resolution halves)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_blocks: int, **block_kwargs
    ) -> None:
        super().__init__()
        self.blocks = make_blocks(in_channels, out_channels, num_blocks, **block_kwargs)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x))


class Bridge(BaseModule):
    """The SE-like bridge between tail and body, at the lowest resolution.

    ``squeeze``: norm-ReLU-conv1x1(C -> C/2)-norm-ReLU, then conv1x1(C/2 -> 2C, with bias);
    ``blocks``: residual blocks 2C -> C; ``attention``: norm-ReLU-global pool-conv1x1(2C -> C/16)-
    ReLU-conv1x1(C/16 -> C)-sigmoid on the 2C map. Output: ``blocks(s) * a + a``.
    """

    def __init__(
        self,
        channels: int,
        num_blocks: int,
        norm_cfg: ConfigType,
        conv_cfg: OptConfigType = None,
        **block_kwargs,
    ) -> None:
        super().__init__()
        wide = channels * 2
        self.squeeze = nn.Sequential(
            *norm_act_conv(channels, channels // 2, norm_cfg, conv_cfg),
            build_norm(norm_cfg, channels // 2),
            nn.ReLU(inplace=True),
            build_conv_layer(conv_cfg, channels // 2, wide, 1, bias=True),
        )
        self.blocks = make_blocks(
            wide, channels, num_blocks, norm_cfg=norm_cfg, conv_cfg=conv_cfg, **block_kwargs
        )
        self.attention = nn.Sequential(
            build_norm(norm_cfg, wide),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            build_conv_layer(conv_cfg, wide, channels // 16, 1, bias=True),
            nn.ReLU(inplace=True),
            build_conv_layer(conv_cfg, channels // 16, channels, 1, bias=True),
            nn.Sigmoid(),
        )
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        a = self.attention(s)
        return self.blocks(s) * a + a


class BodyStage(BaseModule):
    """A body stage (UR block): up-sampling, refining with a transferred tail feature.

    ``out = cat(upsample(blocks(x)), transfer(lateral))``. The first of ``blocks`` shortens its
    shortcut by channel-wise reduction (k = in_channels // out_channels); the 3x3 convolutions
    of ``blocks`` are dilated, the transfer blocks are not. Up-sampling is nearest x2.
    ``blocks`` work at the input's resolution, ``transfer`` at twice it: their bottleneck widths
    (``mid_channels``, ``transfer_mid_channels``; None is FishNet's ``out_channels // 4``) are
    set apart, for FishNeXt, whose group width follows the resolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        lateral_channels: int,
        num_blocks: int,
        num_transfer_blocks: int,
        dilation: int,
        mid_channels: Optional[int] = None,
        transfer_mid_channels: Optional[int] = None,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.blocks = make_blocks(
            in_channels,
            out_channels,
            num_blocks,
            dilation=dilation,
            first_shortcut='reduction',
            mid_channels=mid_channels,
            **block_kwargs,
        )
        self.transfer = make_blocks(
            lateral_channels,
            lateral_channels,
            num_transfer_blocks,
            mid_channels=transfer_mid_channels,
            **block_kwargs,
        )
        self.upsample = nn.Upsample(scale_factor=2, mode='nearest')
        self.out_channels = out_channels + lateral_channels

    def forward(self, x: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.upsample(self.blocks(x)), self.transfer(lateral)], dim=1)


class HeadStage(BaseModule):
    """A head stage (DR block): down-sampling, refining with a transferred body feature.

    ``out = cat(pool(blocks(x)), transfer(lateral))`` with a 2x2 max pool: no convolution
    between resolutions and no channel reduction, so features of every depth reach the output.
    ``blocks`` work at the input's resolution, ``transfer`` at half it, each with its own
    bottleneck width (``mid_channels``, ``transfer_mid_channels``; None: ``out_channels // 4``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        lateral_channels: int,
        num_blocks: int,
        num_transfer_blocks: int,
        mid_channels: Optional[int] = None,
        transfer_mid_channels: Optional[int] = None,
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.blocks = make_blocks(
            in_channels, out_channels, num_blocks, mid_channels=mid_channels, **block_kwargs
        )
        self.transfer = make_blocks(
            lateral_channels,
            lateral_channels,
            num_transfer_blocks,
            mid_channels=transfer_mid_channels,
            **block_kwargs,
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.out_channels = out_channels + lateral_channels

    def forward(self, x: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.pool(self.blocks(x)), self.transfer(lateral)], dim=1)


class ScoreHead(BaseModule):
    """The reference classifier: norm-ReLU-conv1x1(C -> C/2)-norm-ReLU, global pool, conv1x1."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        norm_cfg: ConfigType,
        conv_cfg: OptConfigType = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            *norm_act_conv(in_channels, in_channels // 2, norm_cfg, conv_cfg),
            build_norm(norm_cfg, in_channels // 2),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = build_conv_layer(conv_cfg, in_channels // 2, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x))).flatten(1)


def reference_init(module: nn.Module) -> None:
    """The reference's initialisation of every layer in ``module``: conv weights normal with std
    ``sqrt(2 / (k * k * out_channels))``, norm weights 1 and biases 0."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            std = (2.0 / (kh * kw * layer.out_channels)) ** 0.5
            nn.init.normal_(layer.weight, 0.0, std)
        elif isinstance(layer, (_BatchNorm, nn.GroupNorm)):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


__all__ = [
    'Bridge',
    'BodyStage',
    'HeadStage',
    'PreActBottleneck',
    'ScoreHead',
    'Stem',
    'TailStage',
    'make_blocks',
    'build_norm',
    'norm_act_conv',
    'reference_init',
]
