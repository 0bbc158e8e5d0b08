"""Synchronized batch norm that also works on CPUs (gloo), for distributed runs without CUDA.

torch's ``nn.SyncBatchNorm`` and mmcv's ``MMSyncBN`` run on CUDA tensors only. ``CPUSyncBN``
computes the same thing with plain collectives: in training, under an initialised process group
with more than one process, each process sums its inputs and squared inputs per channel, one
differentiable ``all_reduce`` adds them over all processes, and every process normalises with
the global batch mean and (biased) variance and updates its running statistics with the
unbiased one, exactly as BN would on the concatenated batch. Elsewhere (eval mode, a single
process) it is ``nn.BatchNorm2d``.
"""

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn as nn

from mmfish.registry import register_norm_layer


@register_norm_layer(name='CPUSyncBN')
class CPUSyncBatchNorm(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training statistics are taken over all processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        if dist.get_world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        channels = x.shape[1]
        count = x.new_tensor([x.numel() // channels], dtype=torch.float32)
        local = torch.cat([x.float().sum((0, 2, 3)), (x.float() ** 2).sum((0, 2, 3)), count])
        total = dist_fn.all_reduce(local)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean**2).clamp_(min=0)

        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)
                else:
                    factor = self.momentum
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.mul_(1 - factor).add_(
                    mean.to(self.running_mean.dtype), alpha=factor
                )
                self.running_var.mul_(1 - factor).add_(
                    unbiased.to(self.running_var.dtype), alpha=factor
                )

        shape = (1, channels, 1, 1)
        out = (x.float() - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)
