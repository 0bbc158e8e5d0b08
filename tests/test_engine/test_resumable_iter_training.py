"""Exact resume of iteration-based training, from an mmseg config.

The tiny segmentation config (``tests/data/tiny_seg_config.py``: the segmentation demo shrunk,
with its random flips, the decode head's dropout, and ``FaultTolerantCheckpointHook`` with
``ResumableIterBasedTrainLoop`` as every mmfish segmentation config) on generated label maps. A run
interrupted after a checkpoint and resumed must end with the uninterrupted run's weights, bit for
bit: in-process from a checkpoint at the end of a pass over the data (a sampler with passes), and
through ``tools/train.py`` after SIGTERM (exit status 75) with mmseg's ``InfiniteSampler``,
data-loading workers and no seed in the config, as mmseg's own configs have them.
"""

import glob
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time
from typing import Dict

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmfish.engine.hooks import PREEMPTED_EXIT_CODE
from mmfish.testing import ROOT, TINY_SEG_CONFIG

pytest.importorskip('mmseg')

TRAIN = osp.join(ROOT, 'tools', 'train.py')


def _weights(path: str) -> Dict[str, torch.Tensor]:
    return torch.load(path)['state_dict']


def _differing(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> list:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


# ------------------------------------------------------------------------------- in-process
class _Interrupt(Hook):
    priority = 'LOWEST'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == 6:
            raise RuntimeError('interrupted')


@pytest.fixture(scope='module')
def tiny_seg_cfg(seg_shapes: str) -> Config:
    """8 iterations, a checkpoint every 4, no validation; a sampler with passes of 4 batches."""
    cfg = Config.fromfile(TINY_SEG_CONFIG)
    cfg.train_dataloader.dataset.data_root = seg_shapes
    cfg.train_dataloader.sampler.type = 'DefaultSampler'
    for stage in ('val', 'test'):
        cfg.update({f'{stage}_dataloader': None, f'{stage}_cfg': None, f'{stage}_evaluator': None})
    cfg.train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=8)
    cfg.param_scheduler[1].end = 8
    cfg.default_hooks.checkpoint.interval = 4
    cfg.log_level = 'WARNING'
    return cfg


def test_resume_at_the_end_of_a_pass_equals_uninterrupted(tmp_path, tiny_seg_cfg: Config) -> None:
    def runner(work_dir: str, resume: bool = False) -> Runner:
        return Runner.from_cfg(Config(dict(tiny_seg_cfg, work_dir=work_dir, resume=resume)))

    ref = str(tmp_path / 'ref')
    runner(ref).train()
    work = str(tmp_path / 'work')
    stopped = runner(work)
    stopped.register_hook(_Interrupt())
    with pytest.raises(RuntimeError, match='interrupted'):
        stopped.train()
    checkpoint = torch.load(osp.join(work, 'iter_4.pth'))
    assert checkpoint['resume_state']['processes'][0]['data'] == dict(epoch=0, batches=4)

    runner(work, resume=True).train()
    final = _weights(osp.join(work, 'iter_8.pth'))
    assert not _differing(final, _weights(osp.join(ref, 'iter_8.pth')))

    # The saved states matter: without them the same resume ends elsewhere.
    del checkpoint['resume_state']
    torch.save(checkpoint, osp.join(work, 'iter_4.pth'))
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work, 'iter_4.pth'))
    runner(work, resume=True).train()
    assert _differing(_weights(osp.join(work, 'iter_8.pth')), final)


# ----------------------------------------------------------------------- tools/train.py, SIGTERM
def _train(work: str, data_root: str, *options: str, resume: bool = False) -> list:
    """tools/train.py on the tiny config: 10 iterations, two persistent data-loading workers."""
    return [
        sys.executable, TRAIN, TINY_SEG_CONFIG, '--work-dir', work,
        *(['--resume'] if resume else []), '--cfg-options',
        *(f'{s}_dataloader.dataset.data_root={data_root}' for s in ('train', 'val', 'test')),
        'train_dataloader.num_workers=2', 'train_dataloader.persistent_workers=True',
        'train_cfg.max_iters=10', 'train_cfg.val_interval=10', 'param_scheduler.1.end=10',
        'default_hooks.checkpoint.interval=10', *options,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigterm_then_resume_equals_uninterrupted(
    tmp_path, seg_shapes: str, tool_env: Dict[str, str]
) -> None:
    # Stopped by SIGTERM once a few iterations are done, with no seed in the config (a random
    # one, as mmseg's configs leave it): it finishes the iteration, saves and exits with 75.
    work, out_path = str(tmp_path / 'work'), str(tmp_path / 'stopped.out')
    with open(out_path, 'w') as out:
        proc = subprocess.Popen(
            _train(work, seg_shapes, 'randomness.seed=None'),
            cwd=ROOT, env=tool_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not re.search(r'Iter\(train\) \[\s*[3-9]/10\]', open(out_path).read()):
                assert proc.poll() is None, open(out_path).read()[-3000:]
                assert time.monotonic() < deadline, 'iteration 3 not reached in time'
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=120) == PREEMPTED_EXIT_CODE, open(out_path).read()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    (preempted,) = glob.glob(osp.join(work, 'iter_*.pth'))
    stopped_at = int(re.findall(r'iter_(\d+)', preempted)[0])
    assert 3 <= stopped_at < 10
    state = torch.load(preempted)['resume_state']['processes'][0]
    assert state['data'] == dict(epoch=0, batches=stopped_at)  # one endless pass

    # The uninterrupted run, with the seed the stopped run drew.
    ref = str(tmp_path / 'ref')
    seed = f'randomness.seed={state["seed"]}'
    done = subprocess.run(
        _train(ref, seg_shapes, seed), cwd=ROOT, env=tool_env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # Resumed with the config as it was (no seed): the checkpoint's seeds and states are used.
    resumed = subprocess.run(
        _train(work, seg_shapes, 'randomness.seed=None', resume=True),
        cwd=ROOT, env=tool_env, capture_output=True, text=True,
    )  # fmt: skip
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    # seeded augmentation: the batches taken before are skipped, not loaded
    assert f'Resuming at iteration {stopped_at}: skipping the {stopped_at} batches' in log
    assert 'holds no random states' not in log
    differing = _differing(
        _weights(osp.join(work, 'iter_10.pth')), _weights(osp.join(ref, 'iter_10.pth'))
    )
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:3]}'
