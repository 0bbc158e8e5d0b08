"""Training that survives faults: preemption, kills at any moment, bad arguments.

Exact resume. mmengine 0.10.7 saves model, optimizer, schedulers, message hub and the epoch /
iteration in a checkpoint, but no random states: a resumed run re-seeds the generators at
start-up. Measured before mmfish saved them, on the tiny config (killed after 1-2 iterations of
epoch 2 and resumed; final weights against an uninterrupted run's):

- the demo's random samplers (RPN 256, RoI 128): max abs weight difference 0.10 (359 of 420
  tensors differ); loss of the first resumed iteration 2.54052 against 2.54025;
- ``RandomFlip(prob=0.5)`` only: max abs difference 1.57; first resumed loss 2.48391 against
  2.47387; bbox mAP 0.002 against 0.000.

With ``FaultTolerantCheckpointHook`` and ``ResumableEpochBasedTrainLoop`` the tests below run the
tiny config with both kinds of randomness (:data:`RANDOM_OPTIONS`) and a shuffled sampler, and
assert bit-identical weights, losses and metrics against an uninterrupted run: stopped by SIGTERM
mid-epoch (no data-loading workers), and SIGKILLed at random moments, once inside a checkpoint
write (two workers, a checkpoint every 5 iterations, only the newest kept). The data checks
that stop a run before it starts are tested in ``tests/test_datasets/test_data_checks.py``.
"""

import functools
import glob
import hashlib
import json
import os
import os.path as osp
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import pytest
import torch

from mmfish.engine.hooks import PREEMPTED_EXIT_CODE
from mmfish.testing import ROOT, TEST_DATA_PYTHONPATH, TINY_CONFIG, config_importing

TRAIN = osp.join(ROOT, 'tools', 'train.py')
ITERS_PER_EPOCH = 12  # 24 images at batch 2


# ------------------------------------------------------------------------------------ helpers
def _hashes(work_dir: str) -> Dict[str, str]:
    """sha256 of every checkpoint and of ``last_checkpoint`` in a work dir."""
    names = [n for n in os.listdir(work_dir) if n.endswith('.pth') or n == 'last_checkpoint']
    out = {}
    for name in names:
        with open(osp.join(work_dir, name), 'rb') as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _scalars(work_dir: str, newest_only: bool = False) -> List[dict]:
    """The logged scalars (losses, metrics) of the runs in a work dir, oldest run first."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    entries = []
    for path in files[-1:] if newest_only else files:
        with open(path) as f:
            entries += [json.loads(line) for line in f]
    return entries


def _losses(entries: List[dict], epoch: int) -> Dict[int, float]:
    return {e['iter']: e['loss'] for e in entries if 'loss' in e and e.get('epoch') == epoch}


def _metrics(entries: List[dict]) -> Dict[str, float]:
    evals = [e for e in entries if 'coco/bbox_mAP' in e]
    assert evals, 'no evaluation was logged'
    return {k: v for k, v in evals[-1].items() if k.startswith('coco/')}


def _copy_dataset(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def _output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


# ---------------------------------------------------------------- 1. preemption and exact resume
# The demo's randomness on the tiny config: random flips, and RPN / RoI samplers smaller than
# their candidate sets (they draw with torch.randperm). The sampler shuffles (DefaultSampler).
RANDOM_OPTIONS = [
    'train_dataloader.dataset.pipeline.3.prob=0.5',
    'model.train_cfg.rpn.sampler.num=64',
    'model.train_cfg.rcnn.sampler.num=32',
]
# The seed of the chaos test's kill moments (MMFISH_CHAOS_SEED overrides it).
CHAOS_SEED = 0


def _start(
    work: str, opts: List[str], out_path: str, env: Dict[str, str], *extra: str, config=TINY_CONFIG
):
    """Start tools/train.py in a process group of its own (with its data-loading workers)."""
    cmd = [sys.executable, TRAIN, config, '--work-dir', work, *extra, '--cfg-options', *opts]
    out = open(out_path, 'w')
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.log_file = out
    return proc


def _logs(work: str) -> List[str]:
    return sorted(glob.glob(osp.join(work, '*', '*.log')))


def _iters_logged(work: str, old_logs: Sequence[str] = ()) -> int:
    """Training iterations done, by the log of the newest run in ``work`` not in ``old_logs``."""
    logs = [log for log in _logs(work) if log not in old_logs]
    if not logs:
        return 0
    with open(logs[-1]) as f:
        text = f.read()
    done = [
        (int(e) - 1) * ITERS_PER_EPOCH + int(i)
        for e, i in re.findall(r'Epoch\(train\) \[(\d+)\]\[\s*(\d+)/\d+\]', text)
    ]
    return max(done, default=0)


def _wait_for(proc: subprocess.Popen, condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert proc.poll() is None, f'training ended before {what}'
        assert time.monotonic() < deadline, f'{what}: not reached in time'
        time.sleep(0.02)


def _stop(proc: subprocess.Popen, sig: int) -> int:
    """Send ``sig`` (SIGKILL: to the whole group, workers included); the exit status."""
    try:
        if proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        return proc.wait(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of the run outlives the test
        except ProcessLookupError:
            pass
        proc.wait()
        proc.log_file.close()


def _load(path: str, why: str) -> dict:
    """``torch.load(path)``; a file that does not load fails the test naming ``why``."""
    try:
        return torch.load(path)
    except Exception as error:
        raise AssertionError(f'{path} does not load: {error!r} ({why})') from error


def _same_weights(a: str, b: str) -> List[str]:
    """Names of the tensors that differ between two checkpoints' state dicts."""
    sa, sb = torch.load(a)['state_dict'], torch.load(b)['state_dict']
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable, tool_env: Dict[str, str]
) -> None:
    opts = data_opts(tiny_shapes) + RANDOM_OPTIONS

    # The uninterrupted reference: 2 epochs, then evaluation.
    ref_dir = str(tmp_path / 'ref')
    ref = run_tool('train.py', TINY_CONFIG, '--work-dir', ref_dir, '--cfg-options', *opts)
    assert ref.returncode == 0, _output(ref)[-3000:]

    # The same run, sent SIGTERM (as Slurm does on preemption) once epoch 2 is running: it
    # finishes the iteration, writes iter_<n>.pth and exits with status 75.
    work = str(tmp_path / 'stopped')
    proc = _start(work, opts, str(tmp_path / 'stopped.out'), tool_env)
    _wait_for(proc, lambda: _iters_logged(work) > ITERS_PER_EPOCH, 'epoch 2')
    assert _stop(proc, signal.SIGTERM) == PREEMPTED_EXIT_CODE, open(tmp_path / 'stopped.out').read()
    stopped_at = _iters_logged(work)
    assert ITERS_PER_EPOCH < stopped_at < 2 * ITERS_PER_EPOCH  # mid-epoch
    preempted = osp.join(work, f'iter_{stopped_at}.pth')
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == preempted
    assert 'SIGTERM received' in open(tmp_path / 'stopped.out').read()
    assert not glob.glob(osp.join(work, '.tmp-*'))

    # The checkpoints load with torch's default weights_only=True (mmfish allow-lists
    # mmengine's classes; the random states are plain tensors and numbers) and hold the states.
    ckpt = torch.load(preempted)
    assert ckpt['meta']['epoch'] == 1 and ckpt['meta']['iter'] == stopped_at
    assert {'state_dict', 'optimizer', 'param_schedulers', 'message_hub', 'resume_state'} <= set(
        ckpt
    )
    state = ckpt['resume_state']
    assert state['batches_done'] == stopped_at - ITERS_PER_EPOCH
    assert state['samples_done'] == 2 * state['batches_done']
    assert set(state['processes'][0]['rng']) == {'python', 'numpy', 'torch', 'cuda'}
    assert not _same_weights(osp.join(work, 'epoch_1.pth'), osp.join(ref_dir, 'epoch_1.pth'))
    before = _hashes(work)

    # A resume that fails on bad data (truncated train annotations) stops before the Runner,
    # naming the file, and leaves the checkpoints byte-identical.
    broken = _copy_dataset(tiny_shapes, str(tmp_path / 'truncated'))
    ann = osp.join(broken, 'annotations', 'instances_train.json')
    with open(ann, 'rb') as f:
        text = f.read()
    with open(ann, 'wb') as f:
        f.write(text[: len(text) // 2])
    bad = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--resume', '--cfg-options',
        *data_opts(broken), *RANDOM_OPTIONS,
    )  # fmt: skip
    assert bad.returncode != 0
    assert 'DataCheckError' in bad.stderr and ann in bad.stderr and 'not valid JSON' in bad.stderr
    assert _hashes(work) == before

    # A resume that loads the checkpoint, then crashes on a missing image (the check skipped on
    # purpose) leaves the checkpoints byte-identical too, and writes none.
    holey = _copy_dataset(tiny_shapes, str(tmp_path / 'holey'))
    for name in os.listdir(osp.join(holey, 'train')):
        os.remove(osp.join(holey, 'train', name))
    crash = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--resume', '--cfg-options',
        *data_opts(holey), *RANDOM_OPTIONS, env={'MMFISH_SKIP_DATA_CHECKS': '1'},
    )  # fmt: skip
    assert crash.returncode != 0
    assert f'resumed epoch: 1, iter: {stopped_at}' in _output(crash)
    assert 'No such file or directory' in crash.stderr
    assert _hashes(work) == before

    # The real resume skips the batches already trained on in epoch 2, restores the random
    # states, finishes, and equals the uninterrupted run bit for bit.
    resumed = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--resume', '--cfg-options', *opts
    )
    assert resumed.returncode == 0, _output(resumed)[-3000:]
    log = _output(resumed)
    assert f'resumed epoch: 1, iter: {stopped_at}' in log
    assert f'skipping the {stopped_at - ITERS_PER_EPOCH} batches already trained on' in log
    assert 'holds no random states' not in log
    differing = _same_weights(osp.join(work, 'epoch_2.pth'), osp.join(ref_dir, 'epoch_2.pth'))
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:3]}'
    ref_log, resumed_log = _scalars(ref_dir), _scalars(work, newest_only=True)
    ref_losses = _losses(ref_log, 2)
    resumed_losses = _losses(resumed_log, 2)
    assert sorted(resumed_losses) == list(range(stopped_at + 1, 2 * ITERS_PER_EPOCH + 1))
    assert resumed_losses == {i: ref_losses[i] for i in resumed_losses}
    assert _metrics(resumed_log) == _metrics(ref_log)
    # The preemption checkpoint goes once a newer checkpoint is on disk.
    assert not osp.exists(preempted)


@pytest.mark.slow
def test_chaos_sigkill_at_random_moments_then_resume_equals_uninterrupted(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable, tool_env: Dict[str, str]
) -> None:
    """SIGKILL at random moments, once inside a checkpoint write; resumed each time.

    Two data-loading workers, a checkpoint every 5 iterations with only the newest kept
    (``max_keep_ckpts=1``: mmengine's hook deletes the old one before writing the new one), and
    checkpoint writes slowed down to 1 s (``tests/data/slow_checkpoint_writes.py``) so that a kill
    can land inside one. The kill moments are drawn with :data:`CHAOS_SEED`; ``MMFISH_CHAOS_SEED=N``
    draws others. Every failure message names the seed, so that a failed draw can be replayed.
    """
    seed = int(os.environ.get('MMFISH_CHAOS_SEED', CHAOS_SEED))
    rng = random.Random(seed)
    # Kill moments, in iterations done: inside the write of one of the first checkpoints, then at
    # random iterations (plus a random fraction of an iteration) later and later in the run.
    moments = [('write', rng.choice([10, 15]))]
    moments += [('iter', rng.randint(11, 16)), ('iter', rng.randint(17, 23))]
    moments.sort(key=lambda m: m[1])
    why = f'MMFISH_CHAOS_SEED={seed}, kills at {moments}'
    opts = (
        data_opts(tiny_shapes)
        + RANDOM_OPTIONS
        + [
            'train_dataloader.num_workers=2',
            'default_hooks.checkpoint.by_epoch=False',
            'default_hooks.checkpoint.interval=5',
            'default_hooks.checkpoint.max_keep_ckpts=1',
        ]
    )
    ref_dir = str(tmp_path / 'ref')
    ref = run_tool('train.py', TINY_CONFIG, '--work-dir', ref_dir, '--cfg-options', *opts)
    assert ref.returncode == 0, f'{_output(ref)[-3000:]}\n({why})'

    slow_config = config_importing('slow_checkpoint_writes', str(tmp_path / 'slow_writes.py'))
    pythonpath = [TEST_DATA_PYTHONPATH, tool_env.get('PYTHONPATH', '')]
    env = {**tool_env, 'PYTHONPATH': os.pathsep.join(pythonpath), 'MMFISH_SLOW_WRITE_S': '1'}
    work = str(tmp_path / 'chaos')
    for n, (kind, at) in enumerate(moments):
        old_logs = _logs(work) if osp.isdir(work) else []
        out = str(tmp_path / f'run{n}.out')
        proc = _start(work, opts, out, env, '--resume', config=slow_config)
        if kind == 'write':  # the temporary file of checkpoint `at` is being written
            tmp = osp.join(work, f'.tmp-mmfish-iter_{at}.pth.{proc.pid}')
            _wait_for(proc, functools.partial(osp.exists, tmp), f'checkpoint write {at} ({why})')
            time.sleep(0.3)
        else:
            done = functools.partial(_iters_logged, work, old_logs)
            _wait_for(proc, lambda: done() >= at, f'iteration {at} ({why})')  # noqa: B023
            time.sleep(rng.uniform(0, 0.3))
        assert _stop(proc, signal.SIGKILL) == -signal.SIGKILL, why
        if kind == 'write':  # killed mid-write: the previous checkpoint is still there
            assert osp.exists(tmp), why
            assert osp.isfile(osp.join(work, f'iter_{at - 5}.pth')), why

        # After every kill: last_checkpoint names a complete checkpoint, and every checkpoint
        # file (not the temporary one a kill may leave) loads.
        with open(osp.join(work, 'last_checkpoint')) as f:
            last = f.read().strip()
        assert _load(last, why)['meta']['iter'] % 5 == 0, why
        for path in glob.glob(osp.join(work, '*.pth')):
            _load(path, why)

    final = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--resume', '--cfg-options', *opts
    )
    assert final.returncode == 0, f'{_output(final)[-3000:]}\n({why})'
    assert not glob.glob(osp.join(work, '.tmp-*')), why
    differing = _same_weights(osp.join(work, 'iter_24.pth'), osp.join(ref_dir, 'iter_24.pth'))
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:3]} ({why})'
    assert _metrics(_scalars(work, newest_only=True)) == _metrics(_scalars(ref_dir)), why


# ------------------------------------------------------------------ 2. bad backbone arguments
@pytest.mark.slow
@pytest.mark.parametrize(
    'option, expected',
    [
        ('model.backbone.arch=fishnet50', "Unknown FishNet arch 'fishnet50'"),
        ('model.backbone.out_indices=(12,)', '12 is not a feature index; valid are 0..10'),
        ('model.backbone.frozen_stages=20', 'frozen_stages must be an int in [-1, 10]'),
        ('model.backbone.depht=50', "unexpected keyword argument 'depht'"),
    ],
    ids=['arch', 'out_indices', 'frozen_stages', 'unknown-kwarg'],
)
def test_bad_backbone_argument_fails_at_build(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable, option: str, expected: str
) -> None:
    work = str(tmp_path / 'work')
    proc = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--cfg-options', *data_opts(tiny_shapes),
        option,
    )  # fmt: skip
    # one line, from building the model (FishNet's constructor) before anything is written
    assert proc.returncode == 2
    last_line = proc.stderr.strip().splitlines()[-1]
    assert expected in last_line, proc.stderr[-2000:]
    assert last_line.startswith(f'train.py: error: the model of {TINY_CONFIG} cannot be built: ')
    assert 'Traceback' not in proc.stderr
    assert not osp.exists(work)


# ------------------------------------------------------------------------ 3. the random states
def test_random_states_round_trip_through_a_weights_only_checkpoint(tmp_path) -> None:
    from mmfish.engine.runner import get_rng_states, preserved_rng_states, set_rng_states

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    states = get_rng_states()
    path = str(tmp_path / 'states.pth')
    torch.save(states, path)
    expected = (random.random(), np.random.randn(3), torch.rand(3))
    set_rng_states(torch.load(path, weights_only=True))  # plain tensors and numbers only
    again = (random.random(), np.random.randn(3), torch.rand(3))
    assert expected[0] == again[0]
    assert np.array_equal(expected[1], again[1]) and torch.equal(expected[2], again[2])
    # Draws inside preserved_rng_states() leave the states as they were.
    set_rng_states(states)
    with preserved_rng_states():
        torch.rand(5), np.random.rand(5), random.random()
    assert random.random() == expected[0]
    assert np.array_equal(np.random.randn(3), expected[1])
    assert torch.equal(torch.rand(3), expected[2])
