"""FishNet backbone for MMDetection.

Sun et al., "FishNet: A Versatile Backbone for Image, Region, and Pixel Level Prediction",
NeurIPS 2018 (arXiv 1901.03495). Built to match the authors' reference implementation
(github kevin-ssy/FishNet, ``models/fishnet.py``): same layers, same parameter counts, and,
after ``tools/model_converters/fishnet2mmdet.py``, the same outputs for the same weights.

A FishNet has a tail that goes down in resolution (like a ResNet), a bridge, a body that comes
back up (UR blocks) and a head that goes down again (DR blocks). Body and head stages
concatenate their trunk with a *transferred* earlier feature, so the head's outputs hold
features of every depth. Its eleven features, numbered as ``out_indices`` uses them:

=====  ==================  ====================  ======
index  part                channels (all archs)  stride
=====  ==================  ====================  ======
0      stem                64                    4
1-3    tail stages 0-2     128, 256, 512         8, 16, 32
4      bridge              512                   32
5-7    body stages 0-2     768, 512, 320         16, 8, 4
8-10   head stages 0-2     832, 1600, 2112       8, 16, 32
=====  ==================  ====================  ======
"""

import re
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit
from mmengine.runner.checkpoint import _load_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from mmfish.registry import register_model
from mmfish.utils.mim import tool_command
from mmfish.utils.paths import checkpoint_exists
from mmfish.utils.typing import ConfigType, OptConfigType, OptMultiConfig

from .fish_blocks import BodyStage, Bridge, HeadStage, ScoreHead, Stem, TailStage, build_norm
from .fishnet_pretrained import check_pretrained, missing_checkpoint_message

# Which earlier feature each body / head stage transfers (reference ``trans_map=(2,1,0,6,5,4)``):
# the body refines with tail features 2, 1 and the stem; the head with body features 6, 5 and
# the bridge.
BODY_TRANSFER_SOURCES = (2, 1, 0)
HEAD_TRANSFER_SOURCES = (6, 5, 4)
NUM_FEATURES = 11
SIZE_DIVISOR = 32

# The trained norm that normalises each feature next inside the reference network: the
# pre-activation norm of the feature's first consumer on the main path (the next stage's first
# block; the bridge's squeeze for the last tail feature; the score head for the last head
# feature). ``out_norm`` layers are filled from these when a checkpoint has no ``out_norms.<i>``,
# so that a fine-tuned backbone returns ``relu(consumer_norm(feature))`` of the ImageNet network.
CONSUMER_NORMS: Dict[int, str] = {
    0: 'tail.0.blocks.0.norm1',
    1: 'tail.1.blocks.0.norm1',
    2: 'tail.2.blocks.0.norm1',
    3: 'bridge.squeeze.0',
    4: 'body.0.blocks.0.norm1',
    5: 'body.1.blocks.0.norm1',
    6: 'body.2.blocks.0.norm1',
    7: 'head.0.blocks.0.norm1',
    8: 'head.1.blocks.0.norm1',
    9: 'head.2.blocks.0.norm1',
    10: 'score.conv.0',
}
_NORM_STATE = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
# out_norms before they were keyed by feature index: ``out_norms.<position>.0.<leaf>``.
_POSITIONAL_OUT_NORM_RE = re.compile(r'^out_norms\.(\d+)\.0\.(\w+)$')

# The reference's network_planes [64, 128, 256, 512, 512, 512, 384, 256, 320, 832, 1600] are
# shared by all variants: stem, tail (x3), bridge (= last tail), body (x3) and head. The head's
# planes equal its input channels (no channel reduction), so they are derived, not set.
_REFERENCE_CHANNELS = dict(
    stem_channels=64, tail_channels=(128, 256, 512), body_channels=(512, 384, 256)
)
# FishNet's bottlenecks: ungrouped, out_channels // 4 wide. FishNeXt sets both (see arch_settings).
_PLAIN_BOTTLENECK = dict(groups=1, group_width=None)


# Rows of an NHWC -> NCHW copy done at a time on CPU (bytes): about the L2 cache.
_CONVERT_CHUNK_BYTES = 1 << 20


BN_SINGLE_VALUE_ERROR = 'Expected more than 1 value per channel'


def single_value_batch_norm_message(x: torch.Tensor) -> str:
    """Why BatchNorm refused to train on the batch ``x`` (torch's bare error), and the fixes."""
    n, _, h, w = x.shape
    per_image = (h // SIZE_DIVISOR) * (w // SIZE_DIVISOR)
    return (
        f'FishNet: a BatchNorm layer in training mode got a single value per channel and cannot '
        f'normalise it. The batch holds {n} image(s) of {h}x{w}, so the stride-{SIZE_DIVISOR} '
        f'features are {h // SIZE_DIVISOR}x{w // SIZE_DIVISOR}: {n * per_image} value(s) per '
        'channel. Fix one of: more images per batch (train_dataloader.batch_size >= 2 per GPU); '
        f'larger images (at least {2 * SIZE_DIVISOR} px on one side after padding); '
        'norm_eval=True in the backbone (BatchNorm keeps its running statistics, as when '
        'fine-tuning from ImageNet weights); or GroupNorm, which does not depend on the batch '
        "(backbone norm_cfg=dict(type='GN', num_groups=16, requires_grad=True))."
    )


def nhwc_to_nchw_copy(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()`` for an NHWC ``x``; on CPU a few rows at a time.

    torch's one-call copy transposes the whole tensor at once: on the large maps of a detection
    input it measured 1.7-5x slower than copying blocks of rows that fit in the cache (2
    threads: (1, 320, 200, 304) 92 against 53 ms, (1, 832, 100, 152) 93 against 30 ms). Same
    values, bit for bit: it is a copy.
    """
    if x.device.type != 'cpu':
        return x.contiguous()
    n, c, h, w = x.shape
    rows = max(1, _CONVERT_CHUNK_BYTES // max(1, n * c * w * x.element_size()))
    if rows >= h:
        return x.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for top in range(0, h, rows):
        out[:, :, top : top + rows].copy_(x[:, :, top : top + rows])
    return out


class _NHWCToNCHW(torch.autograd.Function):
    """``x.contiguous()`` for an NHWC ``x``, whose backward hands back an NHWC gradient.

    A neck gives NCHW gradients; fed to the NHWC network they would make its element-wise
    backward kernels mix formats, which on CPU is up to 10x slower than either (the out_norm
    ReLU's backward on (8, 320, 56, 56): 27 ms against 3 ms). One copy here is cheaper.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return nhwc_to_nchw_copy(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.contiguous(memory_format=torch.channels_last)


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """An NCHW-contiguous ``x``: consumers may read raw memory as NCHW (mmcv's RoIAlign does,
    and misreads an NHWC tensor without an error)."""
    if x.is_contiguous():
        return x
    if x.is_contiguous(memory_format=torch.channels_last):
        return _NHWCToNCHW.apply(x)
    return x.contiguous()


@register_model
class FishNet(BaseModule):
    """FishNet backbone.

    Args:
        arch: ``'fishnet99'``, ``'fishnet150'``, ``'fishnet201'``, or a dict with the block
            counts ``tail_blocks``, ``bridge_blocks``, ``body_blocks``, ``head_blocks``,
            ``body_transfer_blocks``, ``head_transfer_blocks`` (and optionally
            ``stem_channels``, ``tail_channels``, ``body_channels``, and the grouped
            bottleneck of FishNeXt: ``groups`` and ``group_width``). ``'fishnext150'`` is
            FishNeXt-150, FishNet-150 with grouped residual blocks (see ``arch_settings``).
            With ``group_width`` set, every residual block's 3x3 convolution has ``groups``
            groups of ``group_width * stride // 4`` channels, ``stride`` being the resolution
            the block works at (4 to 32): a group's width is the same in a stage and doubles
            from one stage to the next, as in ResNeXt. None (the default) keeps FishNet's
            bottleneck width, ``out_channels // 4``, with ``groups`` groups (1 by default).
        in_channels: Channels of the input image.
        out_indices: Features to return, by index in the table of the module docstring. The
            default ``(7, 8, 9, 10)`` is the body's last feature and the head's three: strides
            4, 8, 16, 32, the natural input of an FPN. Stages after the last requested feature
            are not built (unless ``num_classes`` is set).
        out_norm: Pass each returned feature through its own norm and ReLU
            (``out_norms.<index>``). FishNet is pre-activation: its features are sums of
            residuals, never normalised (standard deviation about 2 on 2112 channels), and every
            consumer inside the network starts with norm-ReLU, as the reference classifier does.
            An FPN does not, and fed raw features its losses start an order of magnitude higher;
            so detection configs keep this on. Loaded from an ImageNet checkpoint, each out norm
            is the trained norm of the feature's consumer in the network (``CONSUMER_NORMS``):
            the converter writes them, and a checkpoint without them gets them from the
            consumer's keys. With ``norm_eval`` the backbone then returns exactly
            ``relu(consumer_norm(feature))`` of the ImageNet network. From scratch they start
            as fresh norms. ``False`` returns the raw features, exactly as the reference
            computes them.
        num_classes: Build the reference's score head (norm-ReLU-conv1x1-norm-ReLU, global pool,
            conv1x1) for image classification; use :meth:`classify`. None: no score head.
        frozen_stages: Freeze (eval mode, no gradient) the modules producing features
            ``0..frozen_stages``. -1 freezes nothing.
        norm_cfg: Norm layers (BN, SyncBN, GN with ``num_groups`` dividing 80, 208, 400...).
        conv_cfg: Conv layers; None is ``nn.Conv2d``.
        norm_eval: Keep norm layers in eval mode (frozen statistics) while training.
        with_cp: Gradient checkpointing in the stem and every residual block (``True`` or
            ``'block'``): their activations are recomputed in backward instead of kept. Same
            results; at 800x1216 fishnet150 trains in about half the memory (README, "Speed").
            ``'stage'`` checkpoints the stem and each whole stage instead (tail, bridge, body and
            head stages): a tenth as many checkpoints, for GPUs, where each one costs host time;
            backward then holds one stage's activations at a time.
        channels_last: Run the network in the channels-last (NHWC) memory format: on CPUs
            (oneDNN) and GPU tensor cores its convolutions are much faster (README, "Speed").
            Inputs are converted; the returned features are NCHW-contiguous whatever this says,
            because mmcv's CPU ops (RoIAlign) read raw memory and would silently misread an NHWC
            tensor. Values equal the contiguous network's up to float rounding order.
        init_cfg: None is the reference's initialisation (conv weights normal with std
            ``sqrt(2 / (k * k * out_channels))``, norms 1 and 0); or an mmengine init config,
            e.g. ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``. A
            ``Pretrained`` checkpoint must be this variant's (the converter records it) with
            this model's keys and shapes, or :meth:`init_weights` refuses it
            (:mod:`~mmfish.models.backbones.fishnet_pretrained`). Training from scratch needs
            more than None here: nothing frozen and norms trained (``frozen_stages=-1``,
            ``norm_eval=False``), as the ``*_gn-all_scratch_6x_coco.py`` configs set.

    Example:
        >>> import torch
        >>> from mmfish.models import FishNet
        >>> model = FishNet(arch='fishnet99')
        >>> model.eval()
        >>> outputs = model(torch.rand(1, 3, 224, 256))
        >>> for feature in outputs:
        ...     print(tuple(feature.shape))
        (1, 320, 56, 64)
        (1, 832, 28, 32)
        (1, 1600, 14, 16)
        (1, 2112, 7, 8)
    """

    arch_settings: Dict[str, dict] = {
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
    # FishNeXt-150 (the paper's residual blocks "with identity mapping and grouping",
    # as ResNeXt; no reference code): FishNet-150's blocks with a grouped 3x3 convolution of
    # 48 groups, 2 channels per group in the blocks working at stride 4, doubling with each
    # halving of the resolution (4, 8, 16 at strides 8, 16, 32): bottleneck widths 96, 192,
    # 384, 768. 48 groups of 2 is the setting that puts the classifier at about 26M
    # parameters as the paper says (26,750,888 with a 1000-class score head; 32 groups of
    # 2 give 19.3M, 32 of 3 give 27.6M).
    arch_settings['fishnext150'] = dict(arch_settings['fishnet150'], groups=48, group_width=2)

    def __init__(
        self,
        arch: Union[str, dict] = 'fishnet150',
        in_channels: int = 3,
        out_indices: Sequence[int] = (7, 8, 9, 10),
        out_norm: bool = True,
        num_classes: Optional[int] = None,
        frozen_stages: int = -1,
        norm_cfg: ConfigType = dict(type='BN', requires_grad=True),
        conv_cfg: OptConfigType = None,
        norm_eval: bool = False,
        with_cp: Union[bool, str] = False,
        channels_last: bool = True,
        init_cfg: OptMultiConfig = None,
    ) -> None:
        super().__init__(init_cfg)
        self.arch = self._parse_arch(arch)
        # The variant's name (None for a custom dict that is no variant's settings).
        self.variant_name: Optional[str] = next(
            (name for name in self.arch_settings if self._parse_arch(name) == self.arch), None
        )
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
        self.out_indices = self._check_out_indices(out_indices)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < NUM_FEATURES:
            raise ValueError(
                f'frozen_stages must be an int in [-1, {NUM_FEATURES - 1}] (-1 freezes nothing, '
                f'k freezes the modules producing features 0..k), got {frozen_stages!r}'
            )
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f'num_classes must be None or a positive int, got {num_classes!r}')
        if not (isinstance(with_cp, bool) or with_cp in ('block', 'stage')):
            raise ValueError(
                f"with_cp must be False, True (or 'block': every block) or 'stage' (every "
                f'stage), got {with_cp!r}'
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.channels_last = channels_last
        self.norm_cfg = norm_cfg

        # Build stage by stage, recording each feature's channels and stride as it is made.
        last = NUM_FEATURES - 1 if num_classes is not None else max(self.out_indices)
        arch_cfg = self.arch
        block_kwargs = dict(
            norm_cfg=norm_cfg,
            conv_cfg=conv_cfg,
            with_cp=with_cp in (True, 'block'),
            groups=arch_cfg['groups'],
        )
        mid = self._mid_channels
        self.feature_info: List[dict] = []

        def record(name: str, channels: int, stride: int) -> bool:
            self.feature_info.append(dict(name=name, channels=channels, stride=stride))
            return len(self.feature_info) <= last

        self.stem = Stem(in_channels, arch_cfg['stem_channels'], norm_cfg, conv_cfg)
        building = record('stem', arch_cfg['stem_channels'], 4)

        self.tail = nn.ModuleList()
        channels, stride = arch_cfg['stem_channels'], 4
        for i, (out_ch, n) in enumerate(zip(arch_cfg['tail_channels'], arch_cfg['tail_blocks'])):
            if not building:
                break
            self.tail.append(
                TailStage(channels, out_ch, n, mid_channels=mid(stride), **block_kwargs)
            )
            channels, stride = out_ch, stride * 2
            building = record(f'tail.{i}', channels, stride)

        self.bridge = None
        if building:
            self.bridge = Bridge(
                channels, arch_cfg['bridge_blocks'], mid_channels=mid(stride), **block_kwargs
            )
            building = record('bridge', channels, stride)

        self.body = nn.ModuleList()
        for i, (out_ch, n, n_transfer) in enumerate(
            zip(
                arch_cfg['body_channels'], arch_cfg['body_blocks'], arch_cfg['body_transfer_blocks']
            )
        ):
            if not building:
                break
            lateral = self.feature_info[BODY_TRANSFER_SOURCES[i]]
            stage = BodyStage(
                channels,
                out_ch,
                lateral['channels'],
                n,
                n_transfer,
                dilation=2**i,
                mid_channels=mid(stride),
                transfer_mid_channels=mid(lateral['stride']),
                **block_kwargs,
            )
            self.body.append(stage)
            channels, stride = stage.out_channels, stride // 2
            assert lateral['stride'] == stride
            building = record(f'body.{i}', channels, stride)

        self.head = nn.ModuleList()
        for i, (n, n_transfer) in enumerate(
            zip(arch_cfg['head_blocks'], arch_cfg['head_transfer_blocks'])
        ):
            if not building:
                break
            lateral = self.feature_info[HEAD_TRANSFER_SOURCES[i]]
            stage = HeadStage(
                channels,
                channels,
                lateral['channels'],
                n,
                n_transfer,
                mid_channels=mid(stride),
                transfer_mid_channels=mid(lateral['stride']),
                **block_kwargs,
            )
            self.head.append(stage)
            channels, stride = stage.out_channels, stride * 2
            assert lateral['stride'] == stride
            building = record(f'head.{i}', channels, stride)

        self.out_channels: Tuple[int, ...] = tuple(
            self.feature_info[i]['channels'] for i in self.out_indices
        )
        self.out_strides: Tuple[int, ...] = tuple(
            self.feature_info[i]['stride'] for i in self.out_indices
        )
        self.out_norms = None
        if out_norm:
            self.out_norms = nn.ModuleDict(
                {
                    str(i): build_norm(norm_cfg, c)
                    for i, c in zip(self.out_indices, self.out_channels)
                }
            )
            self._register_load_state_dict_pre_hook(self._fill_out_norms)
        self.score = None
        if num_classes is not None:
            self.score = ScoreHead(channels, num_classes, norm_cfg, conv_cfg)

        if channels_last:
            self.to(memory_format=torch.channels_last)
        self._freeze_stages()

    # ----------------------------------------------------------------------------------- checks
    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise KeyError(
                    f'Unknown FishNet arch {arch!r}: valid are {sorted(cls.arch_settings)}, '
                    'or a dict of block counts.'
                )
            return {**_REFERENCE_CHANNELS, **_PLAIN_BOTTLENECK, **cls.arch_settings[arch]}
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        required = set(cls.arch_settings['fishnet150'])
        optional = set(_REFERENCE_CHANNELS) | set(_PLAIN_BOTTLENECK)
        unknown, missing = set(arch) - required - optional, required - set(arch)
        if unknown or missing:
            raise KeyError(
                f'A custom FishNet arch needs the keys {sorted(required)} and may set '
                f'{sorted(optional)}; unknown: {sorted(unknown)}, '
                f'missing: {sorted(missing)}.'
            )
        parsed = {**_REFERENCE_CHANNELS, **_PLAIN_BOTTLENECK, **arch}
        for key in _PLAIN_BOTTLENECK:
            value = parsed.pop(key)
            if not (value is None and key == 'group_width') and not (
                isinstance(value, int) and not isinstance(value, bool) and value > 0
            ):
                raise ValueError(
                    f'arch[{key!r}] must be a positive int'
                    + (" or None (FishNet's width)" if key == 'group_width' else '')
                    + f', got {value!r}'
                )
        for key, value in parsed.items():
            values = (value,) if key in ('stem_channels', 'bridge_blocks') else value
            if (
                not isinstance(values, (tuple, list))
                or len(values) not in (1, 3)
                or (len(values) == 1 and key not in ('stem_channels', 'bridge_blocks'))
                or not all(isinstance(v, int) and v > 0 for v in values)
            ):
                raise ValueError(
                    f'arch[{key!r}] must be '
                    + ('a positive int' if len(values) == 1 else 'three positive ints')
                    + f', got {value!r}'
                )
            parsed[key] = tuple(value) if isinstance(value, (tuple, list)) else value
        # The body's channel-wise reduction sums k = in // out adjacent channels.
        in_ch = parsed['tail_channels'][-1]
        lateral = (parsed['tail_channels'][1], parsed['tail_channels'][0], parsed['stem_channels'])
        for i, out_ch in enumerate(parsed['body_channels']):
            if in_ch % out_ch:
                raise ValueError(
                    f"arch['body_channels'][{i}]={out_ch} must divide its input's {in_ch} "
                    'channels (channel-wise reduction)'
                )
            in_ch = out_ch + lateral[i]
        parsed.update(groups=arch.get('groups', 1), group_width=arch.get('group_width'))
        return parsed

    def _mid_channels(self, stride: int) -> Optional[int]:
        """Bottleneck width of the residual blocks working at ``stride``; None: FishNet's."""
        if self.arch['group_width'] is None:
            return None
        return self.arch['groups'] * self.arch['group_width'] * stride // 4

    @staticmethod
    def _check_out_indices(out_indices: Sequence[int]) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        out_indices = tuple(out_indices)
        if not out_indices:
            raise ValueError('out_indices is empty: name at least one feature, e.g. (7, 8, 9, 10)')
        for i in out_indices:
            if not isinstance(i, int) or not 0 <= i < NUM_FEATURES:
                raise ValueError(
                    f'out_indices {out_indices}: {i!r} is not a feature index; valid are '
                    f'0..{NUM_FEATURES - 1} (0 stem, 1-3 tail, 4 bridge, 5-7 body, 8-10 head)'
                )
        if len(set(out_indices)) != len(out_indices):
            raise ValueError(f'out_indices {out_indices} has duplicates')
        return out_indices

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f'FishNet expects a (N, C, H, W) tensor, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'FishNet was built with in_channels={self.in_channels} but the input has '
                f'{x.shape[1]} channels (shape {tuple(x.shape)})'
            )
        h, w = x.shape[-2:]
        if h % SIZE_DIVISOR or w % SIZE_DIVISOR:
            raise ValueError(
                f'FishNet needs input height and width that are multiples of {SIZE_DIVISOR}, got '
                f'{h}x{w}: the body and head concatenate features of matching sizes. Pad the '
                f'images: pad_size_divisor={SIZE_DIVISOR} in the data preprocessor does it.'
            )

    # ---------------------------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """All built features, in index order (stem, tail, bridge, body, head)."""
        self._check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # The stem works at half the input resolution: at detection sizes its activations are
        # the largest in the network, so checkpointing it saves more than any block.
        features = [self._run(self.stem, x, checkpoint=bool(self.with_cp))]
        by_stage = self.with_cp == 'stage'
        for stage in self.tail:
            features.append(self._run(stage, features[-1], checkpoint=by_stage))
        if self.bridge is not None:
            features.append(self._run(self.bridge, features[-1], checkpoint=by_stage))
        for stage, source in zip(self.body, BODY_TRANSFER_SOURCES):
            features.append(self._run(stage, features[-1], features[source], checkpoint=by_stage))
        for stage, source in zip(self.head, HEAD_TRANSFER_SOURCES):
            features.append(self._run(stage, features[-1], features[source], checkpoint=by_stage))
        return features

    @staticmethod
    def _run(module: nn.Module, *inputs: torch.Tensor, checkpoint: bool) -> torch.Tensor:
        """``module(*inputs)``, checkpointed when asked and something needs a gradient."""
        if (
            checkpoint
            and torch.is_grad_enabled()
            and (
                any(t.requires_grad for t in inputs)
                or any(p.requires_grad for p in module.parameters())
            )
        ):
            return cp.checkpoint(module, *inputs, use_reentrant=False)
        return module(*inputs)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Return the features named by ``out_indices``, as a tuple of NCHW-contiguous tensors."""
        try:
            features = self.forward_features(x)
            outs = [features[i] for i in self.out_indices]
            if self.out_norms is not None:
                outs = [
                    F.relu(self.out_norms[str(i)](out), inplace=True)
                    for i, out in zip(self.out_indices, outs)
                ]
        except ValueError as error:
            if BN_SINGLE_VALUE_ERROR not in str(error):
                raise
            raise ValueError(single_value_batch_norm_message(x)) from error
        return tuple(to_nchw(out) for out in outs)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level logits from the score head, (N, num_classes)."""
        if self.score is None:
            raise RuntimeError('FishNet.classify needs a score head: build with num_classes=1000')
        return self.score(self.forward_features(x)[-1])

    # ------------------------------------------------------------------------- checkpoint loading
    def fill_out_norms(self, state_dict: dict, prefix: str = '') -> List[int]:
        """Give every out norm its trained counterpart in ``state_dict`` (changed in place).

        ``out_norms.<i>`` present: kept. Written by mmfish before the out norms were keyed by
        feature index (``out_norms.<position>.0.*``): renamed. Else, from an ImageNet checkpoint,
        copied from the norm of feature ``i``'s consumer (``CONSUMER_NORMS``) where the file has
        it.

        Args:
            state_dict: A state dict that this module (under ``prefix``) is to load.
            prefix: The module's prefix in ``state_dict``.

        Returns:
            The features whose out norm the state dict has neither way (none without out norms).
        """
        relevant = [k for k in state_dict if k.startswith(prefix)]
        if self.out_norms is None or not relevant:
            return []
        for key in [k for k in relevant if k.startswith(prefix + 'out_norms.')]:
            match = _POSITIONAL_OUT_NORM_RE.match(key[len(prefix) :])
            if match and int(match.group(1)) < len(self.out_indices):
                index = self.out_indices[int(match.group(1))]
                state_dict[f'{prefix}out_norms.{index}.{match.group(2)}'] = state_dict.pop(key)
        missing = []
        for index in self.out_indices:
            target = f'{prefix}out_norms.{index}.'
            if any(k.startswith(target) for k in state_dict):
                continue
            source = f'{prefix}{CONSUMER_NORMS[index]}.'
            if f'{source}weight' not in state_dict:
                missing.append(index)
                continue
            for leaf in _NORM_STATE:
                if source + leaf in state_dict:
                    state_dict[target + leaf] = state_dict[source + leaf].clone()
        return missing

    def _fill_out_norms(self, state_dict: dict, prefix: str, *args) -> None:
        """Load pre-hook: :meth:`fill_out_norms`; a checkpoint that has neither gets a warning
        (and the norm keeps its current state)."""
        missing = self.fill_out_norms(state_dict, prefix)
        if missing:
            warnings.warn(
                f'FishNet: the checkpoint has no trained norm for feature(s) {missing} '
                f'(neither out_norms.<i> nor the consumer norm '
                f'{[CONSUMER_NORMS[i] for i in missing]}), so their out norms keep their '
                'initial statistics (mean 0, variance 1): under norm_eval they stay the '
                "identity. Convert the authors' checkpoint again with "
                f'{tool_command("model_converters/fishnet2mmdet.py")}, which writes them '
                '(README, "ImageNet weights").',
                stacklevel=2,
            )

    # ----------------------------------------------------------------------- training behaviour
    def stages(self) -> List[nn.Module]:
        """The built modules in feature order: stem, tail stages, bridge, body, head stages."""
        modules = [self.stem, *self.tail]
        if self.bridge is not None:
            modules.append(self.bridge)
        return modules + [*self.body, *self.head]

    def _freeze_stages(self) -> None:
        for module in self.stages()[: self.frozen_stages + 1]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'FishNet':
        """Set train mode, keeping frozen stages (and norms when ``norm_eval``) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """Reference initialisation when ``init_cfg`` is None, else mmengine's.

        A ``Pretrained`` checkpoint is checked first (:func:`~mmfish.models.backbones.
        fishnet_pretrained.check_pretrained`): a missing file, or one that would load only in
        part (another variant, other keys or shapes), stops here with the fix.
        """
        if self.init_cfg is not None:
            self._check_pretrained_files()
            super().init_weights()
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                std = (2.0 / (kh * kw * module.out_channels)) ** 0.5
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, (_BatchNorm, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _check_pretrained_files(self) -> None:
        """Every ``Pretrained`` checkpoint of ``init_cfg`` exists and fits this model.

        Read once here and once more by mmengine's loader: a second read of a file of about
        100 MB, once per training.
        """
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        for cfg in cfgs:
            if cfg.get('type') not in ('Pretrained', PretrainedInit) or not cfg.get('checkpoint'):
                continue
            path = cfg['checkpoint']
            if not checkpoint_exists(path):
                raise FileNotFoundError(missing_checkpoint_message(self, path))
            checkpoint = _load_checkpoint(path, map_location='cpu')
            if isinstance(checkpoint, Mapping):
                check_pretrained(self, checkpoint, path, cfg.get('prefix'))
