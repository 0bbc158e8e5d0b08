from .backbones import FishNet
from .layers import CPUSyncBatchNorm

__all__ = ['CPUSyncBatchNorm', 'FishNet']
