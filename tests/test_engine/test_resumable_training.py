"""FaultTolerantCheckpointHook and ResumableEpochBasedTrainLoop on a toy model, in-process.

Fast counterparts of the end-to-end runs in test_fault_tolerant_training.py: a linear model whose
data draw from Python's and numpy's generators (in the data-loading workers when there are any)
and whose loss draws from torch's (``torch.randperm``, as mmdet's RoI sampler does), with a
shuffled sampler. A run interrupted after a checkpoint (by an exception, a failed write or
SIGTERM) and resumed must end with the uninterrupted run's weights, bit for bit.
"""

import logging
import os
import os.path as osp
import random
import signal
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.utils.data._utils as loader_utils
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmfish.engine.hooks import PREEMPTED_EXIT_CODE, FaultTolerantCheckpointHook
from mmfish.engine.hooks.checkpoint_hook import TMP_MARK
from mmfish.engine.runner import ResumableEpochBasedTrainLoop

ITERS_PER_EPOCH = 6  # 12 samples at batch 2
MAX_EPOCHS = 3


@pytest.fixture(autouse=True)
def quick_worker_shutdown(monkeypatch) -> None:
    """Persistent workers of a finished in-process run take 5 s each to shut down (torch's
    status-check interval) when the Runner is collected; 0.2 s keeps the tests short."""
    monkeypatch.setattr(loader_utils, 'MP_STATUS_CHECK_INTERVAL', 0.2)


class RandomToyData(Dataset):
    """12 samples of 4 values, each drawn afresh (Python and numpy) at every load."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        noise = np.random.rand(4).astype(np.float32) + random.random()
        return dict(inputs=torch.full((4,), index / 12) + torch.from_numpy(noise))


class RandomToyModel(BaseModel):
    """A linear layer trained on a random subset of each batch (drawn with torch.randperm)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs: List[torch.Tensor], data_samples=None, mode: str = 'tensor'):
        x = torch.stack(inputs)
        keep = torch.randperm(len(x))[: len(x) - 1]
        return dict(loss=(self.linear(x[keep]) - 1).pow(2).mean())


class Interrupt(Hook):
    """Raises after iteration ``at``, once the checkpoint hook has run; or sends SIGTERM."""

    priority = 'LOWEST'

    def __init__(self, at: int, sigterm: bool = False) -> None:
        self.at, self.sigterm = at, sigterm

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at:
            if self.sigterm:
                os.kill(os.getpid(), signal.SIGTERM)  # handled after the next iteration
            else:
                raise RuntimeError('interrupted')


class _Records(logging.Handler):
    """Keeps the messages logged at ``level`` and above."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _runner(
    work_dir: str,
    name: str,
    num_workers: int = 0,
    interrupt: Optional[Hook] = None,
    resume: bool = False,
    max_keep_ckpts: int = -1,
    by_epoch: bool = False,
    persistent: bool = False,
    seeded: bool = True,
) -> Runner:
    torch.manual_seed(1234)  # the same initial weights in every run
    return Runner(
        model=RandomToyModel(),
        work_dir=work_dir,
        experiment_name=name,
        train_dataloader=dict(
            dataset=RandomToyData(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='pseudo_collate'),
            batch_size=2,
            num_workers=num_workers,
            persistent_workers=persistent and num_workers > 0,
        ),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        train_cfg=dict(
            type=ResumableEpochBasedTrainLoop, max_epochs=MAX_EPOCHS, seeded_augmentation=seeded
        ),
        default_hooks=dict(
            checkpoint=FaultTolerantCheckpointHook(
                interval=1 if by_epoch else 4, by_epoch=by_epoch, max_keep_ckpts=max_keep_ckpts
            ),
            logger=dict(type='LoggerHook', interval=1),
        ),
        custom_hooks=[interrupt] if interrupt else None,
        randomness=dict(seed=0, deterministic=True),
        resume=resume,
    )


def _weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The weights of a trained model (``Runner.train()`` returns it)."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), {k: (a[k], b[k]) for k in a}


@pytest.mark.parametrize('saved', ['iter_8', 'iter_12', 'epoch_1'])
@pytest.mark.parametrize('num_workers', [0, 2])
def test_resume_equals_uninterrupted(tmp_path, num_workers: int, saved: str) -> None:
    """Checkpoints in the middle of epoch 2, at its last iteration, and after epoch 1."""
    name, by_epoch = f'{num_workers}-{saved}', saved.startswith('epoch')
    reference = _weights(_runner(str(tmp_path / 'ref'), f'ref{name}', num_workers).train())
    work = str(tmp_path / 'work')
    with pytest.raises(RuntimeError, match='interrupted'):  # 2 iterations after the checkpoint
        at = 8 if by_epoch else int(saved[5:]) + 2
        _runner(work, f'a{name}', num_workers, Interrupt(at), by_epoch=by_epoch).train()
    checkpoint = osp.join(work, f'{saved}.pth')
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == checkpoint
    state = torch.load(checkpoint)['resume_state']
    # an iteration checkpoint at an epoch's last iteration counts the epoch as running, all done
    assert state['batches_done'] == {'iter_8': 2, 'iter_12': 6, 'epoch_1': 0}[saved]
    assert state['samples_done'] == 2 * state['batches_done']
    resumed = _runner(work, f'b{name}', num_workers, resume=True, by_epoch=by_epoch)
    _assert_same(_weights(resumed.train()), reference)

    # The random states matter: without them the resumed run ends elsewhere.
    ckpt = torch.load(checkpoint)
    del ckpt['resume_state']
    torch.save(ckpt, checkpoint)
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(checkpoint)
    runner = _runner(work, f'c{name}', num_workers, resume=True, by_epoch=by_epoch)
    warnings = _Records(logging.WARNING)
    runner.logger.addHandler(warnings)
    legacy = _weights(runner.train())
    assert any('holds no random states' in m for m in warnings.messages)
    assert any(not torch.equal(legacy[k], reference[k]) for k in reference)


def _killed_and_resumed(work: str, name: str, kills: List[int], **kwargs) -> nn.Module:
    """A run stopped after each iteration of ``kills`` and resumed, to the end."""
    for n, at in enumerate(kills):
        with pytest.raises(RuntimeError, match='interrupted'):
            _runner(work, f'{name}{n}', interrupt=Interrupt(at), resume=n > 0, **kwargs).train()
    return _runner(work, f'{name}{len(kills)}', resume=True, **kwargs).train()


@pytest.mark.parametrize('num_workers', [0, 1, 2])
def test_persistent_workers_resume_in_any_epoch(tmp_path, num_workers: int) -> None:
    """Persistent workers (with 1 and 2), stopped in epoch 2 and again in epoch 3.

    The data draw from Python's and numpy's generators in the workers, whose states no checkpoint
    holds: with seeded augmentation (the default) each sample's draws are a function of
    (seed, epoch, index), and the resumed runs end with the uninterrupted run's weights.
    """
    opts = dict(num_workers=num_workers, persistent=True)
    reference = _weights(_runner(str(tmp_path / 'ref'), 'ref', **opts).train())
    # checkpoints every 4 iterations: resumed from iter_8 (epoch 2), then iter_16 (epoch 3)
    work = str(tmp_path / 'work')
    _assert_same(_weights(_killed_and_resumed(work, 'kill', [10, 17], **opts)), reference)


def test_persistent_workers_without_seeded_augmentation_resume_elsewhere(tmp_path) -> None:
    """The opt-out, train_cfg.seeded_augmentation=False: the workers' states are lost, with a
    warning (what the test above would find without seeded augmentation)."""
    opts = dict(num_workers=2, persistent=True, seeded=False)
    reference = _weights(_runner(str(tmp_path / 'ref'), 'ref', **opts).train())
    work = str(tmp_path / 'work')
    with pytest.raises(RuntimeError, match='interrupted'):
        _runner(work, 'a', interrupt=Interrupt(17), **opts).train()
    runner = _runner(work, 'b', resume=True, **opts)
    warnings = _Records(logging.WARNING)
    runner.logger.addHandler(warnings)
    resumed = _weights(runner.train())
    assert any('seeded_augmentation=False' in m for m in warnings.messages)
    assert any(not torch.equal(resumed[k], reference[k]) for k in reference)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    reference = _weights(_runner(str(tmp_path / 'ref'), 'ref-w').train())
    work = str(tmp_path / 'work')
    put = LocalBackend.put

    def crash_in_write(self, obj: bytes, filepath: str) -> None:
        if osp.basename(filepath).startswith(f'{TMP_MARK}iter_8.pth'):
            with open(filepath, 'wb') as f:
                f.write(obj[: len(obj) // 2])
            raise OSError('disk full (simulated)')
        put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', crash_in_write)
    with pytest.raises(OSError, match='simulated'):
        _runner(work, 'a-w', max_keep_ckpts=1).train()
    monkeypatch.setattr(LocalBackend, 'put', put)
    # max_keep_ckpts=1, and mmengine's hook would have deleted iter_4.pth before writing.
    files = sorted(os.listdir(work))
    assert 'iter_4.pth' in files and 'iter_8.pth' not in files
    assert not any(name.startswith(TMP_MARK) for name in files)  # the partial file is removed
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert torch.load(f.read().strip())['meta']['iter'] == 4

    resumed = _runner(work, 'b-w', resume=True, max_keep_ckpts=1)
    _assert_same(_weights(resumed.train()), reference)
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == ['iter_18.pth']
    assert not any(name.startswith(TMP_MARK) for name in os.listdir(work))


def test_sigterm_saves_after_the_iteration_and_exits_75(tmp_path) -> None:
    reference = _weights(_runner(str(tmp_path / 'ref'), 'ref-s').train())
    work = str(tmp_path / 'work')
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:  # the signal arrives during iteration 7
        _runner(work, 'a-s', interrupt=Interrupt(6, sigterm=True)).train()
    signal.signal(signal.SIGTERM, previous)
    assert stopped.value.code == PREEMPTED_EXIT_CODE
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_7.pth')
    assert torch.load(osp.join(work, 'iter_7.pth'))['meta']['iter'] == 7

    resumed = _runner(work, 'b-s', resume=True)
    _assert_same(_weights(resumed.train()), reference)
    assert not osp.exists(osp.join(work, 'iter_7.pth'))  # gone once iter_8.pth was durable
    assert osp.exists(osp.join(work, 'iter_8.pth'))
