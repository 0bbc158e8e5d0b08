"""Mixed precision that works the same from a config on a GPU and on a CPU.

On a GPU, ``--amp`` is mmengine's ``AmpOptimWrapper`` (fp16 autocast around the whole forward
pass, dynamic loss scaling), as in mmdet. mmengine refuses that wrapper without a GPU, and
mmcv's CPU kernels (NMS, RoIAlign) accept only fp32, so on a CPU ``--amp`` runs the backbone and
the neck, where nearly all the FLOPs are, under bf16 autocast and hands their outputs to the
heads in fp32 (:class:`CPUAmpOptimWrapper`, :func:`cpu_autocast`). bf16 has fp32's exponent
range, so no loss scaling is needed.

The same partial autocast serves bf16 training on a GPU (:class:`PartialAmpOptimWrapper`): mmcv
2.1.0's CUDA RoIAlign has no bf16 kernel, so autocasting the whole detector to bf16 (mmengine's
``AmpOptimWrapper(dtype='bfloat16')``) cannot reach the heads, while the backbone and neck can.
Autocast follows the model's device: CPU autocast for a CPU model, CUDA autocast for a CUDA one.
"""

import functools
from contextlib import contextmanager
from typing import Any, Iterator, Sequence, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from mmfish.registry import register_optim_wrapper

AUTOCAST_MODULES = ('backbone', 'neck')


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    return out


def _device_type(module: nn.Module) -> str:
    """``'cuda'``, ``'cpu'``...: where the module's parameters live (CPU if it has none)."""
    param = next(module.parameters(), None)
    return 'cpu' if param is None else param.device.type


def _autocast_forward(module: nn.Module, dtype: torch.dtype):
    forward = module.forward
    device_type = _device_type(module)

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            out = forward(*args, **kwargs)
        return _to_float(out)

    return wrapped


@contextmanager
def partial_autocast(
    model: nn.Module,
    dtype: torch.dtype = torch.bfloat16,
    module_names: Sequence[str] = AUTOCAST_MODULES,
) -> Iterator[None]:
    """Run ``model``'s named submodules under autocast; their outputs come back in fp32.

    The autocast device is each submodule's: CPU autocast on a CPU, CUDA autocast on a GPU.
    """
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


cpu_autocast = partial_autocast  # the name tools/test.py and older code use


@register_optim_wrapper
class PartialAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with autocast (bf16) for the backbone and neck only, heads in fp32.

    On a CPU it is what ``--amp`` uses; on a GPU it is the bf16 route (mmcv's CUDA RoIAlign has
    no bf16 kernel): ``optim_wrapper=dict(type='PartialAmpOptimWrapper', dtype='bfloat16')``.

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
        with (
            super().optim_context(model),
            partial_autocast(model, self.cast_dtype, self.autocast_modules),
        ):
            yield


@register_optim_wrapper
class CPUAmpOptimWrapper(PartialAmpOptimWrapper):
    """:class:`PartialAmpOptimWrapper` under the name ``--amp`` writes on a CPU."""


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
