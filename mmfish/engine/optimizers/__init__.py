"""Optimizer wrappers: mixed precision for the backbone and neck (CPU bf16, GPU bf16)."""

from .amp import (
    CPUAmpOptimWrapper,
    PartialAmpOptimWrapper,
    configure_amp,
    cpu_autocast,
    partial_autocast,
)

__all__ = [
    'CPUAmpOptimWrapper',
    'PartialAmpOptimWrapper',
    'configure_amp',
    'cpu_autocast',
    'partial_autocast',
]
