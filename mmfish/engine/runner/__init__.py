"""Runner-level set-up: checkpoint loading under torch >= 2.6, distributed runs on CPUs."""

from .checkpoint_compat import allow_mmengine_checkpoints
from .dist import setup_cpu_distributed

__all__ = ['allow_mmengine_checkpoints', 'setup_cpu_distributed']
