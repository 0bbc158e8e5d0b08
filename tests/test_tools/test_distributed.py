"""Distributed training and testing on CPUs: tools/dist_train.sh and tools/dist_test.sh with gloo.

Without :func:`mmfish.engine.runner.dist.setup_cpu_distributed`, mmengine 0.10.7 fails on a
CPU-only torch in three places: ``init_dist`` calls ``torch.cuda.set_device`` ("module
'torch._C' has no attribute '_cuda_setDevice'"), mmdet's configs ask for NCCL ("Distributed
package doesn't have NCCL built in"), and the Runner passes ``device_ids=[LOCAL_RANK]`` to DDP,
which refuses it for a CPU module. torch's SyncBatchNorm raises "SyncBatchNorm expected input
tensor to be on GPU ..." on CPU, so SyncBN configs train with mmfish's CPUSyncBN there
(statistics all-reduced over gloo).
"""

import glob
import os.path as osp
import pickle
import socket
from typing import Callable

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config

from mmfish.engine.runner.dist import setup_cpu_distributed
from mmfish.testing import TINY_CONFIG

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason='tests the CPU-only path')


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


@pytest.fixture
def one_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's variables for a world of one process."""
    env = dict(MASTER_ADDR='127.0.0.1', RANK='0', LOCAL_RANK='0', WORLD_SIZE='1')
    for key, value in {**env, 'MASTER_PORT': _free_port()}.items():
        monkeypatch.setenv(key, value)


def _output(proc) -> str:
    return proc.stdout + proc.stderr


def test_nothing_to_do_without_a_launcher() -> None:
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.launcher = 'none'
    before = cfg.to_dict()
    assert setup_cpu_distributed(cfg) is False
    assert cfg.to_dict() == before


@NO_CUDA
def test_other_launchers_need_cuda() -> None:
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.launcher = 'slurm'
    with pytest.raises(RuntimeError, match='use --launcher pytorch'):
        setup_cpu_distributed(cfg)


@NO_CUDA
def test_setup_cpu_distributed_in_one_process(one_process_env: None) -> None:
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.merge_from_dict(
        {
            'model.backbone.norm_cfg.type': 'SyncBN',
            'sync_bn': 'torch',
            'env_cfg.dist_cfg.timeout': 60,
        }
    )
    cfg.launcher = 'pytorch'
    try:
        assert setup_cpu_distributed(cfg) is True
        assert torch_dist.is_initialized() and torch_dist.get_backend() == 'gloo'
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=60)  # nccl -> gloo, rest kept
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert cfg.model.backbone.norm_cfg.type == 'CPUSyncBN' and cfg.sync_bn is None
    assert cfg.env_cfg.cudnn_benchmark is False  # the rest of env_cfg is kept


@NO_CUDA
def test_setup_cpu_distributed_without_env_cfg(one_process_env: None) -> None:
    cfg = Config(dict(launcher='pytorch', model=dict(type='X')))
    try:
        assert setup_cpu_distributed(cfg) is True
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    assert cfg.env_cfg.dist_cfg.backend == 'gloo' and cfg.model_wrapper_cfg.device_ids is None


@pytest.mark.slow
def test_dist_train_then_dist_test_on_cpu(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    work = str(tmp_path / 'work')
    opts = data_opts(tiny_shapes)
    train = run_tool(
        'dist_train.sh', TINY_CONFIG, '2', '--work-dir', work, '--cfg-options', *opts,
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        env={'PORT': _free_port()},
    )  # fmt: skip
    log = _output(train)
    assert train.returncode == 0, log[-3000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert 'Epoch(train) [1][6/6]' in log  # 24 images, 2 processes, batch 2
    assert 'bbox_mAP_copypaste' in log and 'segm_mAP_copypaste' in log
    checkpoint = osp.join(work, 'epoch_1.pth')
    state = torch.load(checkpoint)['state_dict']
    assert not any(k.startswith('module.') for k in state)  # saved unwrapped

    results = str(tmp_path / 'results.pkl')
    test = run_tool(
        'dist_test.sh', TINY_CONFIG, checkpoint, '2', '--work-dir', str(tmp_path / 'test'),
        '--out', results, '--cfg-options', *opts,
        env={'PORT': _free_port()},
    )  # fmt: skip
    log = _output(test)
    assert test.returncode == 0, log[-3000:]
    assert 'bbox_mAP_copypaste' in log and 'segm_mAP_copypaste' in log
    with open(results, 'rb') as f:
        predictions = pickle.load(f)
    # Every val image once, gathered from both processes.
    assert sorted(p['img_id'] for p in predictions) == [1, 2, 3, 4]


@pytest.mark.slow
def test_dist_train_sync_bn_on_cpu(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    work = str(tmp_path / 'work')
    train = run_tool(
        'dist_train.sh', TINY_CONFIG, '2', '--work-dir', work, '--cfg-options',
        *data_opts(tiny_shapes), 'model.backbone.norm_cfg.type=SyncBN', 'sync_bn=torch',
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
        env={'PORT': _free_port()},
    )  # fmt: skip
    log = _output(train)
    assert train.returncode == 0, log[-3000:]
    assert 'torch has no SyncBatchNorm on CPU: using mmfish CPUSyncBN' in log
    assert "model.backbone.norm_cfg, sync_bn='torch'" in log
    assert 'Epoch(train) [1][6/6]' in log
    assert glob.glob(osp.join(work, 'epoch_1.pth'))
