"""Checkpoint writes that fail or are replaced leave a loadable checkpoint behind.

The best checkpoint (``save_best``) is replaced atomically: the new file is complete before the
old one goes. A write that fails (a full disk, simulated by an ``OSError(ENOSPC)`` in the middle
of the write) leaves the previous checkpoint and ``last_checkpoint`` as they were, no partial
file, and stops training in one line (exit status 1).
"""

import errno
import glob
import os
import os.path as osp
from types import SimpleNamespace
from typing import Callable, List, Optional

import pytest
import torch
from mmengine.logging import MessageHub

from mmfish.engine.hooks import CheckpointWriteError, FaultTolerantCheckpointHook
from mmfish.testing import TEST_DATA_PYTHONPATH, config_importing


class _Runner(SimpleNamespace):
    """What ``FaultTolerantCheckpointHook`` needs of a runner to save a best checkpoint.

    ``save_checkpoint`` writes ``{'meta': meta}``; it records, for each write, which files the
    directory held while the new one was written, and fails with ENOSPC when ``full`` is set.
    """

    def __init__(self, work_dir: str) -> None:
        super().__init__(
            work_dir=work_dir,
            epoch=0,
            iter=0,
            message_hub=MessageHub.get_instance(f'best_{work_dir}'),
            logger=SimpleNamespace(info=lambda m: None, warning=lambda m: None),
            train_loop=SimpleNamespace(),
        )
        self.present_during_write: List[List[str]] = []
        self.full: Optional[bool] = False

    def save_checkpoint(self, out_dir: str, filename: str, *args, meta=None, **kwargs) -> None:
        self.present_during_write.append(sorted(os.listdir(out_dir)))
        path = osp.join(out_dir, filename)
        if self.full:
            with open(path, 'wb') as f:
                f.write(b'half a checkpoint')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        torch.save({'meta': meta}, path)


def test_best_checkpoint_is_replaced_atomically_and_survives_a_full_disk(tmp_path) -> None:
    runner = _Runner(str(tmp_path))
    hook = FaultTolerantCheckpointHook(interval=1, save_best='acc', rule='greater')
    hook.before_train(runner)

    runner.epoch = 1
    hook.after_val_epoch(runner, {'acc': 0.5})
    assert sorted(os.listdir(tmp_path)) == ['best_acc_epoch_1.pth']

    runner.epoch = 2
    hook.after_val_epoch(runner, {'acc': 0.7})
    # while epoch 2's best was written, epoch 1's was still there (mmengine removes it first)
    assert 'best_acc_epoch_1.pth' in runner.present_during_write[-1]
    assert sorted(os.listdir(tmp_path)) == ['best_acc_epoch_2.pth']
    assert runner.message_hub.get_info('best_ckpt') == str(tmp_path / 'best_acc_epoch_2.pth')

    runner.epoch, runner.full = 3, True
    with pytest.raises(CheckpointWriteError, match='No space left on device') as error:
        hook.after_val_epoch(runner, {'acc': 0.9})
    assert f'the previous checkpoint {tmp_path / "best_acc_epoch_2.pth"} is intact' in str(
        error.value
    )
    assert sorted(os.listdir(tmp_path)) == ['best_acc_epoch_2.pth']  # no partial file left
    assert torch.load(tmp_path / 'best_acc_epoch_2.pth')['meta']['epoch'] == 2
    assert runner.message_hub.get_info('best_ckpt') == str(tmp_path / 'best_acc_epoch_2.pth')
    assert runner.message_hub.get_info('best_score') == 0.7


@pytest.mark.slow
def test_full_disk_during_a_save_keeps_the_previous_checkpoint(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    """Checkpoints every 3 iterations, only the newest kept; the disk is full from the third
    write (iteration 9) on: training stops in one line, iter_6.pth and last_checkpoint intact."""
    config = config_importing('inject_faults', str(tmp_path / 'full_disk.py'))
    work = str(tmp_path / 'work')
    env = {
        'PYTHONPATH': TEST_DATA_PYTHONPATH,
        'MMFISH_FULL_DISK_AFTER': '2',
    }
    proc = run_tool(
        'train.py', config, '--work-dir', work, '--cfg-options', *data_opts(tiny_shapes),
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.by_epoch=False', 'default_hooks.checkpoint.interval=3',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    target = osp.join(work, 'iter_9.pth')
    assert last_line.startswith(
        f'train.py: stopped: CheckpointWriteError: could not write the checkpoint {target}: '
        '[Errno 28] No space left on device'
    ), last_line
    previous = osp.join(work, 'iter_6.pth')
    assert f'the previous checkpoint {previous} is intact and last_checkpoint names it' in last_line
    assert 'Traceback' not in proc.stderr
    assert 'Epoch(train) [1][10/12]' not in proc.stdout  # stopped at the failed save
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(work, '*.pth'))) == ['iter_6.pth']
    assert not glob.glob(osp.join(work, '.tmp-*'))
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == previous
    ckpt = torch.load(previous)
    assert ckpt['meta']['iter'] == 6
    assert ckpt['message_hub']['runtime_info']['last_ckpt'] == previous
