"""Memory-format helpers for a network run in channels-last (NHWC) on CPU.

A FishNet built with ``channels_last=True`` computes in NHWC, but returns NCHW-contiguous
features: consumers may read raw memory as NCHW (mmcv's CPU RoIAlign does, and misreads an NHWC
tensor without an error). :func:`to_nchw` makes that copy in a way that keeps the network's
backward in NHWC; :func:`same_memory_format` tells which format a gradient should be made in.
``docs/benchmark_cpu.md`` measures the network in both memory formats.
"""

import torch

# Bytes of an NHWC -> NCHW copy done at a time on CPU: about the L2 cache.
CONVERT_CHUNK_BYTES = 1 << 20


def same_memory_format(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for an NHWC tensor, else ``torch.contiguous_format``."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def nhwc_to_nchw_copy(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()`` for an NHWC ``x``; on CPU a few rows at a time.

    torch's one-call copy transposes the whole tensor at once; on the large maps of a detection
    input that is slower than copying blocks of rows that fit in the cache
    (:data:`CONVERT_CHUNK_BYTES`). Same values, bit for bit: it is a copy.
    """
    if x.device.type != 'cpu':
        return x.contiguous()
    n, c, h, w = x.shape
    rows = max(1, CONVERT_CHUNK_BYTES // max(1, n * c * w * x.element_size()))
    if rows >= h:
        return x.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for top in range(0, h, rows):
        out[:, :, top : top + rows].copy_(x[:, :, top : top + rows])
    return out


class NHWCToNCHW(torch.autograd.Function):
    """``x.contiguous()`` for an NHWC ``x``, whose backward hands back an NHWC gradient.

    A neck gives NCHW gradients; fed to the NHWC network they would make its element-wise
    backward kernels mix formats, which on CPU is much slower than either format alone. One
    copy here is cheaper.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return nhwc_to_nchw_copy(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.contiguous(memory_format=torch.channels_last)


def to_nchw(x: torch.Tensor) -> torch.Tensor:
    """An NCHW-contiguous ``x``: consumers may read raw memory as NCHW (mmcv's RoIAlign does,
    and misreads an NHWC tensor without an error)."""
    if x.is_contiguous():
        return x
    if x.is_contiguous(memory_format=torch.channels_last):
        return NHWCToNCHW.apply(x)
    return x.contiguous()


__all__ = [
    'CONVERT_CHUNK_BYTES',
    'NHWCToNCHW',
    'nhwc_to_nchw_copy',
    'same_memory_format',
    'to_nchw',
]
