"""The reference's score head as an MMPretrain classification head.

An ``ImageClassifier`` whose backbone is ``FishNet(out_indices=(10,), out_norm=False)`` and whose
head is :class:`FishNetClsHead` computes exactly the reference network's logits
(``FishNet.classify``): the head is the same :class:`~mmfish.models.backbones.fish_blocks.ScoreHead`
(norm-ReLU-conv1x1-norm-ReLU, global average pool, conv1x1), kept under ``head.score``, so a
converted ImageNet file maps onto the classifier by prefixes alone
(:func:`mmfish.models.converters.to_classifier`).
"""

from typing import Optional, Tuple

import torch
from mmpretrain.models.heads import ClsHead

from mmfish.registry import register_model

from ..backbones.fish_blocks import ScoreHead, reference_init


@register_model
class FishNetClsHead(ClsHead):
    """FishNet's score head for MMPretrain.

    Args:
        num_classes: Number of classes.
        in_channels: Channels of the backbone's last feature (1056 for FishNet-99 and -150,
            1056 for FishNeXt-150, 1584 for FishNet-201: ``FishNet(...).out_channels[-1]``).
        norm_cfg: Norm layers of the head (BN in the reference).
        conv_cfg: Conv layers; None is ``nn.Conv2d``.
        init_cfg: None is the reference's initialisation (as the backbone's).
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of mmpretrain's ``ClsHead``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        norm_cfg: dict = dict(type='BN'),
        conv_cfg: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
        **kwargs,
    ) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be a positive number of classes')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.score = ScoreHead(in_channels, num_classes, norm_cfg, conv_cfg)

    def init_weights(self) -> None:
        if self.init_cfg is None:
            reference_init(self)
            return
        super().init_weights()

    def pre_logits(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The pooled features before the last 1x1 convolution, (N, in_channels // 2)."""
        return self.score.pool(self.score.conv(feats[-1])).flatten(1)

    def forward(self, feats: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The logits, (N, num_classes)."""
        return self.score(feats[-1])


__all__ = ['FishNetClsHead']
