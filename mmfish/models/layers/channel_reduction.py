"""The paper's channel-wise reduction r(x), with fast kernels in both memory formats."""

from typing import Tuple

import torch

from .memory_format import same_memory_format


class ChannelReduction(torch.autograd.Function):
    """r(x): sum every ``k`` adjacent channels, with a backward in the gradient's format.

    The reference's ``x.view(n, c // k, k, h, w).sum(2)`` is a reduction over a dimension of
    size k, which on a channels-last CPU tensor costs many times an addition; its autograd
    backward (expand, then reshape) also writes an NCHW gradient into an NHWC network, which
    makes the next element-wise kernels slow. Here the forward adds k strided channel slices
    (for k = 2, bit for bit the reference's sums) and the backward copies each output channel's
    gradient to its k inputs, in the gradient's format.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:
        ctx.k = k
        out = x[:, 0::k]
        for i in range(1, k):
            out = out + x[:, i::k]
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> Tuple[torch.Tensor, None]:
        n, c, h, w = grad_out.shape
        grad_in = torch.empty(
            (n, c * ctx.k, h, w),
            dtype=grad_out.dtype,
            device=grad_out.device,
            memory_format=same_memory_format(grad_out),
        )
        for i in range(ctx.k):
            grad_in[:, i :: ctx.k] = grad_out  # the sum passes its gradient straight through
        return grad_in, None


def channel_reduction(x: torch.Tensor, k: int) -> torch.Tensor:
    """The paper's r(x): sum every ``k`` adjacent channels, (N, C, H, W) -> (N, C // k, H, W)."""
    if k == 1:
        return x
    return ChannelReduction.apply(x, k)


__all__ = ['ChannelReduction', 'channel_reduction']
