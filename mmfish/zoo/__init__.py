"""FishNet across the mmdet and mmseg model zoos: the swap of a config's ResNet for FishNet
(:mod:`mmfish.zoo.swap`; docs/zoo.md)."""

from .swap import Swap, SwapError, swap_backbone

__all__ = ['Swap', 'SwapError', 'swap_backbone']
