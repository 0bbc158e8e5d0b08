"""Mixed precision that works the same from a config on a GPU and on a CPU."""

import torch
from mmengine.config import Config


def configure_amp(cfg: Config) -> None:
    """Switch ``cfg.optim_wrapper`` to mmengine's ``AmpOptimWrapper`` for this machine.

    On a GPU: fp16 autocast with dynamic loss scaling (mmdet's ``--amp``). On a CPU: bf16
    autocast; bf16 has fp32's exponent range, so no loss scaling is needed (and torch's
    GradScaler is CUDA-only).
    """
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    if torch.cuda.is_available():
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.dtype = 'bfloat16'
        cfg.optim_wrapper.loss_scale = 1.0
