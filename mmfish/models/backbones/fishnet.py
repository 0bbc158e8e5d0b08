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
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.runner import checkpoint as mmengine_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from mmfish.models.layers.memory_format import to_nchw
from mmfish.registry import register_model
from mmfish.utils.mim import tool_command
from mmfish.utils.paths import checkpoint_exists
from mmfish.utils.typing import ConfigType, OptConfigType, OptMultiConfig

from .fish_blocks import (
    BodyStage,
    Bridge,
    HeadStage,
    ScoreHead,
    Stem,
    TailStage,
    build_norm,
    reference_init,
)
from .fishnet_pretrained import (
    LoadTarget,
    PretrainedMismatchError,
    backbone_state_dict,
    check_pretrained,
    missing_checkpoint_message,
)
from .variants import ARCH_SETTINGS, PLAIN_BOTTLENECK, REFERENCE_CHANNELS

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
# The state-dict entries of a norm layer (BatchNorm's; GroupNorm has the first two).
NORM_STATE = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')
# out_norms before they were keyed by feature index: ``out_norms.<position>.0.<leaf>``.
_POSITIONAL_OUT_NORM_RE = re.compile(r'^out_norms\.(\d+)\.0\.(\w+)$')

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


def _is_pretrained(cfg: Mapping) -> bool:
    """Whether an init config is mmengine's ``Pretrained`` with a checkpoint to load."""
    return cfg.get('type') in ('Pretrained', PretrainedInit) and bool(cfg.get('checkpoint'))


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
            results in less memory (docs/benchmark_cpu.md and docs/benchmark_gpu.md measure it).
            ``'stage'`` checkpoints the stem and each whole stage instead (tail, bridge, body and
            head stages): a tenth as many checkpoints, for GPUs, where each one costs host time;
            backward then holds one stage's activations at a time.
        channels_last: Run the network in the channels-last (NHWC) memory format: on CPUs
            (oneDNN) and GPU tensor cores its convolutions are faster (docs/benchmark_cpu.md,
            docs/benchmark_gpu.md). Inputs are converted; the returned features are
            NCHW-contiguous whatever this says, because mmcv's CPU ops (RoIAlign) read raw
            memory and would silently misread an NHWC tensor
            (:mod:`~mmfish.models.layers.memory_format`). Values equal the contiguous network's
            up to float rounding order.
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

    # The one table of variants (:mod:`~mmfish.models.backbones.variants`), by name.
    arch_settings: Dict[str, dict] = ARCH_SETTINGS

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
        self._check_options(in_channels, frozen_stages, num_classes, with_cp)
        self.out_indices = self._check_out_indices(out_indices)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.channels_last = channels_last
        self.norm_cfg = norm_cfg

        # Built stage by stage in feature order; each step records the features it builds in
        # ``feature_info`` (name, channels, stride) and reads its input's from there. Stages
        # after the last feature needed (by out_indices, or by the score head) are not built.
        self.feature_info: List[dict] = []
        last = NUM_FEATURES - 1 if num_classes is not None else max(self.out_indices)
        block_kwargs = dict(
            norm_cfg=norm_cfg,
            conv_cfg=conv_cfg,
            with_cp=with_cp in (True, 'block'),
            groups=self.arch['groups'],
        )
        self.stem = self._build_stem(in_channels, norm_cfg, conv_cfg)
        self.tail = self._build_tail(last, block_kwargs)
        self.bridge = self._build_bridge(last, block_kwargs)
        self.body = self._build_body(last, block_kwargs)
        self.head = self._build_head(last, block_kwargs)
        self.out_channels: Tuple[int, ...] = tuple(
            self.feature_info[i]['channels'] for i in self.out_indices
        )
        self.out_strides: Tuple[int, ...] = tuple(
            self.feature_info[i]['stride'] for i in self.out_indices
        )
        self.out_norms = self._build_out_norms(out_norm, norm_cfg)
        self.score = self._build_score(num_classes, norm_cfg, conv_cfg)

        if channels_last:
            self.to(memory_format=torch.channels_last)
        self._freeze_stages()

    # ------------------------------------------------------------------------------ build steps
    def _record(self, name: str, channels: int, stride: int) -> None:
        """Append the feature just built to ``feature_info``."""
        self.feature_info.append(dict(name=name, channels=channels, stride=stride))

    def _next_needed(self, last: int) -> bool:
        """Whether the next feature (index ``len(feature_info)``) is needed: not after ``last``."""
        return len(self.feature_info) <= last

    def _last_built(self) -> Tuple[int, int]:
        """Channels and stride of the last feature built: the next stage's input."""
        return self.feature_info[-1]['channels'], self.feature_info[-1]['stride']

    def _build_stem(self, in_channels: int, norm_cfg: ConfigType, conv_cfg: OptConfigType) -> Stem:
        """Feature 0: three 3x3 convolutions and a max pool, stride 4."""
        stem = Stem(in_channels, self.arch['stem_channels'], norm_cfg, conv_cfg)
        self._record('stem', self.arch['stem_channels'], 4)
        return stem

    def _build_tail(self, last: int, block_kwargs: dict) -> nn.ModuleList:
        """Features 1-3: residual blocks, each stage halving the resolution."""
        tail = nn.ModuleList()
        stages = zip(self.arch['tail_channels'], self.arch['tail_blocks'])
        for i, (out_channels, num_blocks) in enumerate(stages):
            if not self._next_needed(last):
                break
            channels, stride = self._last_built()
            mid_channels = self._mid_channels(stride)
            tail.append(
                TailStage(
                    channels, out_channels, num_blocks, mid_channels=mid_channels, **block_kwargs
                )
            )
            self._record(f'tail.{i}', out_channels, stride * 2)
        return tail

    def _build_bridge(self, last: int, block_kwargs: dict) -> Optional[Bridge]:
        """Feature 4: the SE-like bridge, at the tail's last resolution."""
        if not self._next_needed(last):
            return None
        channels, stride = self._last_built()
        bridge = Bridge(
            channels,
            self.arch['bridge_blocks'],
            mid_channels=self._mid_channels(stride),
            **block_kwargs,
        )
        self._record('bridge', channels, stride)
        return bridge

    def _build_body(self, last: int, block_kwargs: dict) -> nn.ModuleList:
        """Features 5-7: up-sampling stages, each refined with a transferred tail feature."""
        body = nn.ModuleList()
        stages = zip(
            self.arch['body_channels'],
            self.arch['body_blocks'],
            self.arch['body_transfer_blocks'],
            BODY_TRANSFER_SOURCES,
        )
        for i, (out_channels, num_blocks, num_transfer_blocks, source) in enumerate(stages):
            if not self._next_needed(last):
                break
            channels, stride = self._last_built()
            lateral = self.feature_info[source]
            assert lateral['stride'] == stride // 2
            stage = BodyStage(
                channels,
                out_channels,
                lateral['channels'],
                num_blocks,
                num_transfer_blocks,
                dilation=2**i,
                mid_channels=self._mid_channels(stride),
                transfer_mid_channels=self._mid_channels(lateral['stride']),
                **block_kwargs,
            )
            body.append(stage)
            self._record(f'body.{i}', stage.out_channels, stride // 2)
        return body

    def _build_head(self, last: int, block_kwargs: dict) -> nn.ModuleList:
        """Features 8-10: down-sampling stages, each refined with a transferred body feature."""
        head = nn.ModuleList()
        stages = zip(
            self.arch['head_blocks'], self.arch['head_transfer_blocks'], HEAD_TRANSFER_SOURCES
        )
        for i, (num_blocks, num_transfer_blocks, source) in enumerate(stages):
            if not self._next_needed(last):
                break
            channels, stride = self._last_built()
            lateral = self.feature_info[source]
            assert lateral['stride'] == stride * 2
            stage = HeadStage(
                channels,
                channels,
                lateral['channels'],
                num_blocks,
                num_transfer_blocks,
                mid_channels=self._mid_channels(stride),
                transfer_mid_channels=self._mid_channels(lateral['stride']),
                **block_kwargs,
            )
            head.append(stage)
            self._record(f'head.{i}', stage.out_channels, stride * 2)
        return head

    def _build_out_norms(self, out_norm: bool, norm_cfg: ConfigType) -> Optional[nn.ModuleDict]:
        """A norm per returned feature (``out_norms.<index>``), filled from the consumer norms of
        an ImageNet checkpoint when it is loaded; None without ``out_norm``."""
        if not out_norm:
            return None
        self._register_load_state_dict_pre_hook(self._fill_out_norms)
        return nn.ModuleDict(
            {str(i): build_norm(norm_cfg, c) for i, c in zip(self.out_indices, self.out_channels)}
        )

    def _build_score(
        self, num_classes: Optional[int], norm_cfg: ConfigType, conv_cfg: OptConfigType
    ) -> Optional[ScoreHead]:
        """The reference's classifier on the last feature; None without ``num_classes``."""
        if num_classes is None:
            return None
        return ScoreHead(self.feature_info[-1]['channels'], num_classes, norm_cfg, conv_cfg)

    # ----------------------------------------------------------------------------------- checks
    @staticmethod
    def _check_options(
        in_channels: int, frozen_stages: int, num_classes: Optional[int], with_cp: Union[bool, str]
    ) -> None:
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
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

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise KeyError(
                    f'Unknown FishNet arch {arch!r}: valid are {sorted(cls.arch_settings)}, '
                    'or a dict of block counts.'
                )
            return {**REFERENCE_CHANNELS, **PLAIN_BOTTLENECK, **cls.arch_settings[arch]}
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        required = set(cls.arch_settings['fishnet150'])
        optional = set(REFERENCE_CHANNELS) | set(PLAIN_BOTTLENECK)
        unknown, missing = set(arch) - required - optional, required - set(arch)
        if unknown or missing:
            raise KeyError(
                f'A custom FishNet arch needs the keys {sorted(required)} and may set '
                f'{sorted(optional)}; unknown: {sorted(unknown)}, '
                f'missing: {sorted(missing)}.'
            )
        parsed = {**REFERENCE_CHANNELS, **PLAIN_BOTTLENECK, **arch}
        for key in PLAIN_BOTTLENECK:
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
            for leaf in NORM_STATE:
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
                '(docs/weights.md).',
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

        A ``Pretrained`` checkpoint is read once, here: checked first
        (:func:`~mmfish.models.backbones.fishnet_pretrained.check_pretrained`; a missing file,
        or one that would load only in part: another variant, other keys or shapes, stops here
        with the fix), then loaded as mmengine's ``Pretrained`` init loads it (non-strict, with
        its ``prefix`` and ``map_location``, after the other init configs), so that mmengine
        does not read it again.
        """
        if self.init_cfg is None:
            self._reference_init()
            return
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = [cfg for cfg in cfgs if _is_pretrained(cfg)]
        if not pretrained or self.is_init:
            super().init_weights()
            return
        state_dicts = [self._read_pretrained(cfg) for cfg in pretrained]  # all checked first
        init_cfg = self.init_cfg
        self.init_cfg = [cfg for cfg in cfgs if not _is_pretrained(cfg)]
        try:
            super().init_weights()  # the other init configs; marks this module initialised
        finally:
            self.init_cfg = init_cfg
        for cfg, state_dict in zip(pretrained, state_dicts):
            mmengine_checkpoint.load_state_dict(self, state_dict, strict=False, logger='current')
            if hasattr(self, '_params_init_info'):  # inside a model that logs how it was set
                update_init_info(self, init_info=f'PretrainedInit: load from {cfg["checkpoint"]}')

    def _reference_init(self) -> None:
        """The reference's initialisation (:func:`~.fish_blocks.reference_init`)."""
        reference_init(self)

    def load_target(self) -> LoadTarget:
        """What the check of a ``Pretrained`` file needs to know of this model, as plain data."""
        return LoadTarget(
            variant=self.variant_name,
            shapes={key: tuple(value.shape) for key, value in self.state_dict().items()},
            frozen_stages=self.frozen_stages,
            norm_eval=self.norm_eval,
            norm_cfg=self.norm_cfg,
        )

    def _read_pretrained(self, cfg: Mapping) -> Mapping[str, torch.Tensor]:
        """Read the checkpoint of a ``Pretrained`` init config once, check that it fits this
        model, and return the state dict to load (as mmengine's ``PretrainedInit`` would)."""
        path, prefix = cfg['checkpoint'], cfg.get('prefix')
        if not checkpoint_exists(path):
            raise FileNotFoundError(missing_checkpoint_message(self.load_target(), path))
        if prefix is None:
            print_log(f'load model from: {path}', logger='current')
        else:
            print_log(f'load {prefix} in model from: {path}', logger='current')
        checkpoint = mmengine_checkpoint._load_checkpoint(
            path, map_location=cfg.get('map_location', 'cpu')
        )
        if not isinstance(checkpoint, Mapping):
            raise PretrainedMismatchError(
                f'The Pretrained checkpoint {path!r} holds a {type(checkpoint).__name__}, not a '
                'state dict (a mapping of names to tensors).'
            )
        state_dict, meta = backbone_state_dict(checkpoint, prefix)
        filled = dict(state_dict)
        self.fill_out_norms(filled)  # out norms from their consumers' keys, as loading does
        check_pretrained(filled, meta, self.load_target(), path, prefix)
        return state_dict
