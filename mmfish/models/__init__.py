from .backbones import FishNet

__all__ = ['FishNet']
