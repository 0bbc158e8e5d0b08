"""--amp works on a CPU as on a GPU: bf16 autocast in tools/train.py and tools/test.py."""

import os.path as osp
from typing import Callable

import pytest
import torch
from mmengine.config import Config

from mmfish.engine.optimizers.amp import CPUAmpOptimWrapper, configure_amp
from mmfish.testing import TINY_CONFIG


def test_configure_amp_picks_bf16_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))))
    configure_amp(cfg)
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'


def test_configure_amp_keeps_mmdet_behaviour_on_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))))
    configure_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic' and 'dtype' not in cfg.optim_wrapper


def test_cpu_amp_wrapper_runs_forward_in_bf16():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    detector = torch.nn.Module()
    detector.backbone = model
    with wrapper.optim_context(detector):
        out = detector.backbone(torch.rand(1, 3, 8, 8))
        inner = []
        model[0].register_forward_hook(lambda m, i, o: inner.append(o.dtype))
        detector.backbone(torch.rand(1, 3, 8, 8))
    assert inner == [torch.bfloat16]  # computed in bf16 ...
    assert out.dtype == torch.float32  # ... handed on in fp32, for mmcv's fp32-only CPU ops
    assert 'forward' not in vars(model)  # unpatched afterwards
    wrapper.update_params(out.mean())
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.slow
def test_train_and_test_with_amp_on_cpu(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
):
    work = str(tmp_path / 'work')
    train = run_tool(
        'train.py', TINY_CONFIG, '--amp', '--work-dir', work, '--cfg-options',
        *data_opts(tiny_shapes), 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    )  # fmt: skip
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-3000:]
    assert "type='CPUAmpOptimWrapper'" in log and "dtype='bfloat16'" in log
    assert 'bbox_mAP_copypaste' in log
    checkpoint = osp.join(work, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    test = run_tool(
        'test.py', TINY_CONFIG, checkpoint, '--amp', '--work-dir', str(tmp_path / 'test'),
        '--cfg-options', *data_opts(tiny_shapes),
    )  # fmt: skip
    log = test.stdout + test.stderr
    assert test.returncode == 0, log[-3000:]
    assert 'segm_mAP_copypaste' in log
