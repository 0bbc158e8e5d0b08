"""tools/dist_train.sh and tools/slurm_train.sh exit with train.py's status, 75 for a preemption.

torchrun exits with 1 whenever a worker fails, whatever the worker's status (measured with torch
2.13: workers that exit with 75 after SIGTERM, torchrun 1); srun reports 128 + signal for a task
that ``--kill-on-bad-exit`` killed. The scripts take the status the workers write to
``$MMFISH_EXIT_STATUS_FILE``. Fast tests run the scripts with a stand-in for torchrun / srun; the
slow one preempts a real 2-process torchrun run of the tiny config (gloo, CPU).
"""

import glob
import os
import os.path as osp
import signal
import socket
import stat
import subprocess
import time
from typing import Callable, Dict

import pytest
import torch

from mmfish.engine.hooks import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE
from mmfish.testing import ROOT, TINY_CONFIG


def _script(path, body: str) -> str:
    with open(path, 'w') as f:
        f.write('#!/usr/bin/env bash\n' + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return str(path)


# A stand-in for the workers: write STATUS to the status file as train.py does, exit with EXIT.
_WORKERS = (
    'if [ -n "$STATUS" ]; then echo "$STATUS" > "$MMFISH_EXIT_STATUS_FILE"; fi\n' 'exit "$EXIT"\n'
)


@pytest.mark.parametrize(
    'status, launcher_exit, expected',
    [('75', '1', 75), ('130', '1', 130), ('', '1', 1), ('', '0', 0), ('75', '137', 75)],
)
def test_dist_train_sh_exits_with_the_workers_status(
    tmp_path, run_tool: Callable, status: str, launcher_exit: str, expected: int
) -> None:
    python = _script(tmp_path / 'python', _WORKERS)
    proc = run_tool(
        'dist_train.sh', 'config.py', '2',
        env={'PYTHON': python, 'STATUS': status, 'EXIT': launcher_exit, 'TMPDIR': str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == expected, proc.stderr
    assert os.listdir(tmp_path) == ['python']  # the status file is removed


def test_slurm_train_sh_exits_with_the_tasks_status(tmp_path, run_tool: Callable) -> None:
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    _script(bin_dir / 'srun', _WORKERS)  # a task killed by srun: 128 + SIGKILL
    env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'STATUS': '75', 'EXIT': '137'}
    proc = run_tool(
        'slurm_train.sh', 'partition', 'job', 'config.py', str(tmp_path / 'work'), env=env,
        cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ['bin']  # no work dir made, the status file removed


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize(
    'target, sig, expected',
    [
        ('script', signal.SIGTERM, PREEMPTED_EXIT_CODE),
        ('group', signal.SIGTERM, PREEMPTED_EXIT_CODE),
        ('group', signal.SIGINT, INTERRUPTED_EXIT_CODE),
    ],
    ids=['sigterm-script', 'sigterm-group', 'ctrl-c'],
)
def test_dist_train_sh_stopped_exits_with_the_workers_status(
    tmp_path,
    tiny_shapes: str,
    data_opts: Callable,
    tool_env: Dict[str, str],
    target: str,
    sig: int,
    expected: int,
) -> None:
    """2 processes (gloo); once iteration 2 is logged, SIGTERM to the script alone (as Slurm's
    ``--signal=B:TERM`` does) or to its process group (as a scheduler killing the job does), or
    SIGINT to the group (Ctrl-C in a terminal): the workers save the iteration and exit with 75
    (130 for Ctrl-C), torchrun with 1, the script with the workers' status."""
    work = str(tmp_path / 'work')
    out_path = str(tmp_path / 'out.txt')
    cmd = [
        'bash', osp.join(ROOT, 'tools', 'dist_train.sh'), TINY_CONFIG, '2', '--work-dir', work,
        '--cfg-options', *data_opts(tiny_shapes), 'default_hooks.checkpoint.by_epoch=False',
        'default_hooks.checkpoint.interval=100', 'train_cfg.val_interval=2',
    ]  # fmt: skip
    env = {**tool_env, 'PORT': _free_port()}
    with open(out_path, 'w') as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 120
            while 'Epoch(train) [1][2/6]' not in open(out_path).read():
                assert proc.poll() is None, open(out_path).read()[-3000:]
                assert time.monotonic() < deadline, 'iteration 2 not reached'
                time.sleep(0.1)
            if target == 'script':
                os.kill(proc.pid, sig)
            else:
                os.killpg(proc.pid, sig)
            code = proc.wait(timeout=120)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    log = open(out_path).read()
    assert code == expected, log[-3000:]
    saved = glob.glob(osp.join(work, 'iter_*.pth'))
    assert len(saved) == 1, saved
    name = 'SIGTERM' if sig == signal.SIGTERM else 'Ctrl-C (SIGINT)'
    assert f'{name} received: checkpoint of iteration' in log
    if sig == signal.SIGINT:  # one notice, from rank 0, saying what a second Ctrl-C does
        assert log.count('Ctrl-C: finishing this iteration') == 1
        assert 'Ctrl-C again makes torchrun stop the processes with SIGTERM (status 75)' in log
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == saved[0]
    step = int(osp.basename(saved[0])[len('iter_') : -len('.pth')])
    assert torch.load(saved[0])['meta']['iter'] == step >= 2
