"""FishNet as timm models: ``timm.create_model('fishnet150', ...)`` after ``import mmfish``.

:class:`TimmFishNet` *is* mmfish's :class:`~mmfish.models.backbones.FishNet` (a subclass, built
with its score head and without out norms), so its state dict has the backbone's keys and the
converter's ``--keep-score`` file loads into it as it is. What timm adds:

- ``feature_info`` (timm's: ``num_chs``, ``reduction``, ``module``) lists five features with
  timm's rule of strides that never decrease: the stem (stride 4) and the four features a
  detector takes (body.2, head.0, head.1, head.2 at strides 4, 8, 16, 32). So
  ``features_only=True, out_indices=(1, 2, 3, 4)`` gives the strides that timm's ResNets give
  for the same indices, and FishNet's features 7-10 (the mmdet backbone's default outputs,
  without its out norms).
- ``forward_features`` (the last feature map), ``forward_head`` (the reference's score head;
  ``pre_logits=True`` stops before its last 1x1 convolution), ``forward_intermediates`` (what
  ``features_only`` models call), ``get_classifier`` / ``reset_classifier``.
- Pretrained weights come from local converted files, never downloaded: each tag's
  ``pretrained_cfg['file']`` is the file the converter writes with ``--keep-score``
  (docs/weights.md), relative to the working directory;
  ``pretrained_cfg_overlay=dict(file=PATH)`` points elsewhere.
"""

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ..backbones.fishnet import FishNet
from ..layers.memory_format import to_nchw

# FishNet's features exposed to timm, by timm's index: the stem, then body.2 and the head.
TIMM_FEATURES = (0, 7, 8, 9, 10)


class TimmFishNet(FishNet):
    """mmfish's FishNet with timm's model interface.

    Args:
        arch: A FishNet variant (``'fishnet99'``, ``'fishnet150'``, ``'fishnet201'``,
            ``'fishnext150'``).
        num_classes: Classes of the score head; 0 keeps the head without its last 1x1
            convolution (``forward_head`` then returns the pooled ``head_hidden_size`` features).
        in_chans: Input channels.
        **kwargs: Other :class:`FishNet` options (``norm_cfg``, ``with_cp``, ``channels_last``).
    """

    def __init__(
        self,
        arch: str = 'fishnet150',
        num_classes: int = 1000,
        in_chans: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            arch=arch,
            in_channels=in_chans,
            out_indices=(10,),
            out_norm=False,
            num_classes=max(num_classes, 1),
            **kwargs,
        )
        fish_features = self.feature_info
        self.feature_info: List[Dict[str, Any]] = [
            dict(
                num_chs=fish_features[i]['channels'],
                reduction=fish_features[i]['stride'],
                module=fish_features[i]['name'],
            )
            for i in TIMM_FEATURES
        ]
        self.num_features = fish_features[-1]['channels']
        self.head_hidden_size = self.num_features // 2
        self.num_classes = num_classes
        if num_classes == 0:
            self.score.fc = nn.Identity()

    # ------------------------------------------------------------------------------ timm's API
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The last feature map (head.2), NCHW, before the score head."""
        return to_nchw(super().forward_features(x)[-1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits from the last feature map; ``pre_logits`` stops before the last 1x1 conv."""
        if pre_logits:
            return self.score.pool(self.score.conv(x)).flatten(1)
        return self.score(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_head(self.forward_features(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = 'NCHW',
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The features of timm's ``indices`` (into ``feature_info``), NCHW-contiguous; with
        ``intermediates_only=False`` also the last feature map. FishNet has no final norm
        (``norm`` changes nothing) and its body needs every earlier feature (``stop_early``
        stops after the last one asked for)."""
        if output_fmt != 'NCHW':
            raise ValueError(f'FishNet gives NCHW features only, not output_fmt={output_fmt!r}')
        take, _ = feature_take_indices(len(TIMM_FEATURES), indices)
        features = FishNet.forward_features(self, x)
        intermediates = [to_nchw(features[TIMM_FEATURES[i]]) for i in take]
        if intermediates_only:
            return intermediates
        return to_nchw(features[-1]), intermediates

    def get_classifier(self) -> nn.Module:
        return self.score.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new last 1x1 convolution for ``num_classes`` (0: none)."""
        if global_pool not in (None, 'avg'):
            raise ValueError(f'FishNet pools by average only, not global_pool={global_pool!r}')
        self.num_classes = num_classes
        self.score.fc = (
            nn.Conv2d(self.head_hidden_size, num_classes, 1, bias=True)
            if num_classes > 0
            else nn.Identity()
        )


def _checkpoint_filter(state_dict: Dict[str, torch.Tensor], model: TimmFishNet) -> Dict:
    """A converted file as the timm model loads it: the detection backbone's out norms left
    out; a file without the score head is refused with the command that keeps it."""
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith('out_norms.')}
    if not any(k.startswith('score.conv.') for k in state_dict):
        raise ValueError(
            "the FishNet file has no score head (converted for detection); timm's model needs "
            'it: convert the ImageNet file again with --keep-score '
            '(python tools/model_converters/fishnet2mmdet.py SRC DST --keep-score)'
        )
    return state_dict


def _cfg(file: str = '', **kwargs: Any) -> Dict[str, Any]:
    return dict(
        file=file,
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(7, 7),
        crop_pct=0.875,
        interpolation='bilinear',
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv='stem.0.conv',
        classifier='score.fc',
        **kwargs,
    )


# The published ImageNet weights (docs/weights.md), each as the converter writes it with
# --keep-score; the untagged name of a variant takes its first tag.
default_cfgs = generate_default_cfgs(
    {
        'fishnet99.in1k': _cfg('checkpoints/fishnet99_in1k_timm.pth'),
        'fishnet150.pytorchcv_in1k': _cfg('checkpoints/fishnet150_pytorchcv_in1k_timm.pth'),
        'fishnet150.in1k': _cfg('checkpoints/fishnet150_in1k_timm.pth'),
        'fishnet150.welltrained_in1k': _cfg('checkpoints/fishnet150_welltrained_in1k_timm.pth'),
        'fishnet201': _cfg(),
        'fishnext150': _cfg(),
    }
)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> TimmFishNet:
    return build_model_with_cfg(
        TimmFishNet,
        variant,
        pretrained,
        arch=variant.split('.')[0],
        pretrained_filter_fn=_checkpoint_filter,
        feature_cfg=dict(feature_cls='getter', out_indices=(1, 2, 3, 4)),
        **kwargs,
    )


@register_model
def fishnet99(pretrained: bool = False, **kwargs: Any) -> TimmFishNet:
    """FishNet-99 (16.6M parameters with its ImageNet head)."""
    return _create('fishnet99', pretrained, **kwargs)


@register_model
def fishnet150(pretrained: bool = False, **kwargs: Any) -> TimmFishNet:
    """FishNet-150 (24.96M parameters with its ImageNet head)."""
    return _create('fishnet150', pretrained, **kwargs)


@register_model
def fishnet201(pretrained: bool = False, **kwargs: Any) -> TimmFishNet:
    """FishNet-201 (no published weights that convert exactly)."""
    return _create('fishnet201', pretrained, **kwargs)


@register_model
def fishnext150(pretrained: bool = False, **kwargs: Any) -> TimmFishNet:
    """FishNeXt-150 (no published weights)."""
    return _create('fishnext150', pretrained, **kwargs)


__all__ = ['TIMM_FEATURES', 'TimmFishNet', 'fishnet99', 'fishnet150', 'fishnet201', 'fishnext150']
