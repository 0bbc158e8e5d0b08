"""CPUSyncBN: BN over the batch of all processes, on CPU with gloo (two real processes)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from mmfish.models import CPUSyncBatchNorm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    torch.manual_seed(0)
    full = torch.randn(4 * world_size, 3, 5, 6) * 3 + 1
    x = full[4 * rank : 4 * (rank + 1)].clone().requires_grad_(True)
    bn = CPUSyncBatchNorm(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 0.3]))
    bn.train()
    out = bn(x)
    (out * torch.arange(out.numel()).reshape(out.shape).float()).sum().backward()
    torch.save(
        dict(out=out.detach(), grad=x.grad, weight_grad=bn.weight.grad,
             running_mean=bn.running_mean, running_var=bn.running_var),
        os.path.join(out_dir, f'rank{rank}.pt'),
    )  # fmt: skip
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_bn_on_the_whole_batch(tmp_path):
    world_size = 2
    mp.spawn(_worker, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size)

    torch.manual_seed(0)
    full = (torch.randn(4 * world_size, 3, 5, 6) * 3 + 1).requires_grad_(True)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 0.3]))
    bn.train()
    out = bn(full)
    weights = torch.arange(out[:4].numel()).reshape(out[:4].shape).float()
    (out[:4] * weights).sum().add((out[4:] * weights).sum()).backward()

    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(world_size)]
    torch.testing.assert_close(torch.cat([r['out'] for r in ranks]), out.detach())
    torch.testing.assert_close(torch.cat([r['grad'] for r in ranks]), full.grad)
    torch.testing.assert_close(
        sum(r['weight_grad'] for r in ranks), bn.weight.grad, rtol=2e-5, atol=1e-4
    )
    for r in ranks:
        torch.testing.assert_close(r['running_mean'], bn.running_mean)
        torch.testing.assert_close(r['running_var'], bn.running_var)


def test_single_process_is_plain_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    bn, sync = nn.BatchNorm2d(3), CPUSyncBatchNorm(3)
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_var, bn.running_var)
