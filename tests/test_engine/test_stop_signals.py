"""Ctrl-C keeps the work: the first SIGINT finishes the iteration, saves it and exits with 130;
a second one aborts at once, without a checkpoint.

The tiny config through ``tools/train.py``, with two data-loading workers, SIGINT sent to the
whole process group as a terminal sends it, each iteration slowed down by 1.5 s
(``tests/data/inject_faults.py``) so that the signals land inside an iteration.
"""

import glob
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List

import pytest
import torch

from mmfish.engine.hooks import INTERRUPTED_EXIT_CODE, FaultTolerantCheckpointHook
from mmfish.testing import ROOT, TEST_DATA_PYTHONPATH, config_importing


def _run_until(
    cmd: List[str], env: Dict[str, str], out_path: str, text: str, signals: int, gap: float = 0.0
) -> int:
    """Run ``cmd``; 0.5 s after ``text`` is in its output (inside the next iteration), send SIGINT
    ``signals`` times to its process group, ``gap`` seconds apart; its exit status."""
    with open(out_path, 'w') as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 120
            while text not in open(out_path).read():
                assert proc.poll() is None, open(out_path).read()[-3000:]
                assert time.monotonic() < deadline, f'{text!r} not reached'
                time.sleep(0.05)
            time.sleep(0.5)
            for _ in range(signals):
                os.killpg(proc.pid, signal.SIGINT)
                time.sleep(gap)
            return proc.wait(timeout=60)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130_then_twice_aborts(
    tmp_path, tiny_shapes: str, data_opts: Callable, tool_env: Dict[str, str]
) -> None:
    config = config_importing('inject_faults', str(tmp_path / 'slow_iterations.py'))
    work = str(tmp_path / 'work')
    env = {
        **tool_env,
        'PYTHONPATH': TEST_DATA_PYTHONPATH,
        'MMFISH_SLOW_ITER_S': '1.5',
    }
    cmd = [
        sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work,
        '--resume', '--cfg-options', *data_opts(tiny_shapes), 'train_dataloader.num_workers=2',
        'train_cfg.val_interval=2',
    ]  # fmt: skip

    # Ctrl-C during iteration 2: iteration 2 finishes, is saved, the run exits with 130.
    out = str(tmp_path / 'first.out')
    code = _run_until(cmd, env, out, 'Epoch(train) [1][ 1/12]', signals=1)
    log = open(out).read()
    assert code == INTERRUPTED_EXIT_CODE, log[-3000:]
    assert log.count('Ctrl-C: finishing this iteration, then saving a checkpoint and exiting') == 1
    assert 'Ctrl-C (SIGINT) received: checkpoint of iteration 2 saved' in log
    assert 'Traceback' not in log and 'KeyboardInterrupt' not in log
    saved = osp.join(work, 'iter_2.pth')
    assert torch.load(saved)['meta']['iter'] == 2
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == saved

    # Resumed; Ctrl-C twice during iteration 3: it aborts at once, nothing more is written.
    out = str(tmp_path / 'second.out')
    code = _run_until(cmd, env, out, 'resumed epoch: 0, iter: 2', signals=2, gap=0.2)
    log = open(out).read()
    assert code == -signal.SIGINT, log[-3000:]  # an uncaught KeyboardInterrupt
    assert 'KeyboardInterrupt' in log and 'checkpoint of iteration' not in log
    written = sorted(os.listdir(work))
    assert written == sorted(
        [*(osp.basename(p) for p in glob.glob(osp.join(work, '2*'))), 'iter_2.pth']
        + ['last_checkpoint', 'slow_iterations.py']
    )
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == saved


def test_a_signal_outside_the_training_loop_goes_to_the_previous_handler() -> None:
    """Training that ended with an exception skips ``after_train``: the hook's handlers are still
    installed, and pass a later Ctrl-C on (a notebook's or pytest's own handling stays intact)."""
    hook = FaultTolerantCheckpointHook(interval=1)
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        hook._loop_code = _not_running.__code__  # the loop's code, on no frame of this stack
        hook._previous_handlers = {signal.SIGINT: signal.getsignal(signal.SIGINT)}
        signal.signal(signal.SIGINT, hook._on_stop_signal)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs at the next bytecode
        assert received == [signal.SIGINT]
        assert hook._signal_received == 0  # no checkpoint asked for
        assert signal.getsignal(signal.SIGINT) != hook._on_stop_signal  # the old one is back
    finally:
        signal.signal(signal.SIGINT, previous)


def _not_running() -> None:
    """Stands for the training loop's ``run``."""
