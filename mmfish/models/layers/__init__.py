from .sync_bn import CPUSyncBatchNorm

__all__ = ['CPUSyncBatchNorm']
