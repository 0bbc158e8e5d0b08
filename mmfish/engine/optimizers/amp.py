"""Mixed precision that works the same from a config on a GPU and on a CPU.

On a GPU, ``--amp`` is mmengine's ``AmpOptimWrapper`` (fp16 autocast around the whole forward
pass, dynamic loss scaling), as in mmdet. mmengine refuses that wrapper without a GPU, and
mmcv's CPU kernels (NMS, RoIAlign) accept only fp32, so on a CPU ``--amp`` runs the backbone and
the neck, where nearly all the FLOPs are, under bf16 autocast and hands their outputs to the
heads in fp32 (:class:`CPUAmpOptimWrapper`, :func:`cpu_autocast`). bf16 has fp32's exponent
range, so no loss scaling is needed.
"""

import functools
from contextlib import contextmanager
from typing import Any, Iterator, Sequence, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

AUTOCAST_MODULES = ('backbone', 'neck')


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    return out


def _autocast_forward(module: nn.Module, dtype: torch.dtype):
    forward = module.forward

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        with torch.autocast('cpu', dtype=dtype):
            out = forward(*args, **kwargs)
        return _to_float(out)

    return wrapped


@contextmanager
def cpu_autocast(
    model: nn.Module,
    dtype: torch.dtype = torch.bfloat16,
    module_names: Sequence[str] = AUTOCAST_MODULES,
) -> Iterator[None]:
    """Run ``model``'s named submodules under CPU autocast; their outputs come back in fp32."""
    model = getattr(model, 'module', model)  # unwrap DDP
    patched = []
    for name in module_names:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            module.forward = _autocast_forward(module, dtype)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward  # back to the class's forward


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with CPU autocast (bf16) for the backbone and neck.

    Args:
        dtype: Autocast dtype, ``'bfloat16'`` (or a ``torch.dtype``).
        autocast_modules: Attributes of the model run under autocast.
        **kwargs: ``OptimWrapper`` arguments (optimizer, clip_grad, accumulative_counts).
    """

    def __init__(
        self,
        dtype: Union[str, torch.dtype] = 'bfloat16',
        autocast_modules: Sequence[str] = AUTOCAST_MODULES,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.autocast_modules = tuple(autocast_modules)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model), cpu_autocast(
            model, self.cast_dtype, self.autocast_modules
        ):
            yield


def configure_amp(cfg: Config) -> None:
    """Switch ``cfg.optim_wrapper`` to mixed precision for this machine.

    On a GPU: mmengine's ``AmpOptimWrapper``, fp16 with dynamic loss scaling (mmdet's ``--amp``).
    On a CPU: :class:`CPUAmpOptimWrapper`, bf16 autocast in the backbone and neck.
    """
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
        cfg.optim_wrapper.dtype = 'bfloat16'
