"""Optimizer wrappers: CPU mixed precision."""

from .amp import CPUAmpOptimWrapper, configure_amp, cpu_autocast

__all__ = ['CPUAmpOptimWrapper', 'configure_amp', 'cpu_autocast']
