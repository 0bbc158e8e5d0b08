# isort: skip_file
from . import classification  # the score head in mmpretrain, the timm models (when installed)
from .backbones import FishNet
from .layers import CPUSyncBatchNorm

__all__ = ['CPUSyncBatchNorm', 'FishNet', 'classification']
