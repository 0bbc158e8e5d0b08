"""Distributed training and testing on machines without CUDA (gloo on CPU).

mmengine 0.10.7 assumes one GPU per process under ``--launcher pytorch``: its ``init_dist`` calls
``torch.cuda.set_device`` (an ``AttributeError`` on a CPU-only torch build), mmdet's configs ask
for the NCCL backend, and the Runner wraps the model in DDP with ``device_ids=[LOCAL_RANK]``,
which DDP refuses for a CPU module. torch's ``SyncBatchNorm`` refuses CPU tensors ("SyncBatchNorm
expected input tensor to be on GPU ..."), so SyncBN layers become mmfish's ``CPUSyncBN``, which
all-reduces the batch statistics over gloo. :func:`setup_cpu_distributed` adjusts a config so that
``tools/dist_train.sh`` and ``tools/dist_test.sh`` run on CPUs; on a CUDA machine it does nothing.
"""

import atexit
import datetime
from typing import Any, List

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

from mmfish.utils.mim import tool_command

SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm')


def _to_cpu_sync_bn(node: Any, path: str, types: tuple, changed: List[str]) -> None:
    """Replace the given norm types by ``CPUSyncBN`` in a config tree, recording where."""
    if isinstance(node, dict):
        norm_type = node.get('type')
        if norm_type in types or norm_type is torch.nn.SyncBatchNorm:
            node['type'] = 'CPUSyncBN'
            changed.append(path)
        for key, value in node.items():
            _to_cpu_sync_bn(value, f'{path}.{key}', types, changed)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _to_cpu_sync_bn(value, f'{path}[{i}]', types, changed)


def _destroy_process_group() -> None:
    """Tear the process group down while the interpreter is still alive.

    Without it, gloo's worker threads can still hold tensors at interpreter finalisation and
    release them without the GIL: an occasional SIGABRT at the exit of a finished run. The
    destroy alone still ended about one run in seven with "terminate called without an active
    exception"; the barrier first lets every rank reach the teardown before any rank closes its
    connections (0 of 10 runs failed with it: fewer, not proven none). If a peer is already
    gone the barrier fails at once, and the group is destroyed all the same.
    """
    if not torch_dist.is_initialized():
        return
    try:
        torch_dist.barrier()
    except RuntimeError:
        pass
    torch_dist.destroy_process_group()


def setup_cpu_distributed(cfg: Config) -> bool:
    """Make a distributed run work on CPUs; call it just before building the Runner.

    When ``cfg.launcher`` is ``'pytorch'`` and CUDA is not available:

    - the process group is initialised here, with ``env_cfg.dist_cfg`` (NCCL becomes gloo; other
      arguments such as ``timeout`` are kept), so the Runner does not call ``init_dist``, and
      destroyed at exit;
    - the model is wrapped in ``MMDistributedDataParallel`` with ``device_ids=None``;
    - SyncBN layers in ``cfg.model`` become ``CPUSyncBN`` (statistics all-reduced over gloo:
      the same normalisation as SyncBN); ``cfg.sync_bn`` (mmengine's convert-every-BN option) is
      carried out the same way on the config's BN layers, since torch's converted layers refuse
      CPU tensors.

    Returns:
        True when the config was adjusted for CPU distributed execution.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs CUDA with mmengine 0.10.7 (it calls '
            'torch.cuda.set_device); on a machine without CUDA use --launcher pytorch, i.e. '
            f'{tool_command("dist_train.sh")} / {tool_command("dist_test.sh")}'
        )

    env_cfg = dict(cfg.get('env_cfg') or {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    cfg.env_cfg = {**env_cfg, 'dist_cfg': dist_cfg}
    if not torch_dist.is_initialized():
        kwargs = dict(dist_cfg)
        if kwargs.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
        torch_dist.init_process_group(**kwargs)
        atexit.register(_destroy_process_group)

    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False),
    )
    if wrapper.get('type', 'MMDistributedDataParallel') in (
        'MMDistributedDataParallel',
        'MMSeparateDistributedDataParallel',
    ):
        wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper

    changed: List[str] = []
    types = SYNC_BN_TYPES + (('BN', 'BN2d') if cfg.get('sync_bn') is not None else ())
    _to_cpu_sync_bn(cfg.model, 'model', types, changed)
    if cfg.get('sync_bn') is not None:
        changed.append(f'sync_bn={cfg.sync_bn!r}')
        cfg.sync_bn = None
    if changed and torch_dist.get_rank() == 0:
        print_log(
            'torch has no SyncBatchNorm on CPU: using mmfish CPUSyncBN (batch statistics '
            f'all-reduced over gloo) for {", ".join(changed)}',
            logger='current',
            level=30,
        )
    return True
