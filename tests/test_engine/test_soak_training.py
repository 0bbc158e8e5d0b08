"""Soak test: a long run of the tiny config through ``tools/train.py``, disturbed by events at
random iterations, ends bit-identical to an undisturbed run on the same data.

The data hold bad samples found only when loaded (a corrupt image, a self-intersecting polygon
with ``train_cfg.skip_self_intersecting=True``), skipped in both runs; one step's loss is NaN and
another's gradient (``tests/data/inject_faults.py``), skipped in both runs; the random flips, RPN /
RoI sampling and shuffling are on, with two persistent data-loading workers. The disturbed run is
stopped by each event of :func:`_events` in turn and resumed with ``--resume``; after the last
it runs to the end. The final weights, the final COCO metrics and the bad-sample report must equal
the undisturbed run's.

Two kinds of disturbance, each a list to extend:

- **Events** that stop the disturbed run: ``(kind, iteration)``; :data:`EVENT_KINDS` says how
  each kind stops the run and what its exit status is. The iterations are drawn with
  :data:`SOAK_SEED` (``MMFISH_SOAK_SEED=N`` draws others); every failure names the seed and the
  events, so that a draw can be replayed.
- **Faults both runs share** (the undisturbed run meets them too, and both must handle them the
  same way): the bad samples of :func:`_inject_bad_samples`, the non-finite steps of
  :data:`FAULTS`, and whatever :data:`OPTIONS` injects through the config.
"""

import glob
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
from typing import Callable, Dict, List, NamedTuple, Sequence

import pytest
import torch

from mmfish.datasets.bad_samples import REPORT_NAME
from mmfish.engine.hooks import PREEMPTED_EXIT_CODE
from mmfish.testing import ROOT, TEST_DATA_PYTHONPATH, config_importing

TRAIN = osp.join(ROOT, 'tools', 'train.py')
ITERS_PER_EPOCH = 12  # 24 images at batch 2
MAX_EPOCHS = 17  # 204 iterations
SOAK_SEED = 0
# The steps (counted from 1) whose loss is NaN and whose gradient is NaN, in both runs
# (tests/data/inject_faults.py): the first and the third quarter of the run.
FAULTS = {'MMFISH_NAN_LOSS_ITERS': 37, 'MMFISH_NAN_GRAD_ITERS': 140}
# Both runs' config: the demo's randomness, persistent workers, the schedule, the bad-sample
# settings, checkpoints every 10 iterations (faults injected through the config go here too).
OPTIONS = [
    'train_dataloader.dataset.pipeline.3.prob=0.5',
    'model.train_cfg.rpn.sampler.num=64',
    'model.train_cfg.rcnn.sampler.num=32',
    'train_dataloader.num_workers=2',
    'train_dataloader.persistent_workers=True',
    f'train_cfg.max_epochs={MAX_EPOCHS}',
    f'train_cfg.val_interval={MAX_EPOCHS}',
    'train_cfg.max_bad_samples=2',
    'train_cfg.skip_self_intersecting=True',
    f'param_scheduler.1.end={MAX_EPOCHS}',
    'default_hooks.checkpoint.by_epoch=False',
    'default_hooks.checkpoint.interval=10',
    'default_hooks.checkpoint.max_keep_ckpts=2',
    'default_hooks.logger.interval=1',
]


class Event(NamedTuple):
    kind: str  # a key of EVENT_KINDS
    at: int  # the training iteration after which it happens


def _sigterm(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)  # FaultTolerantCheckpointHook: save, then exit 75


def _sigkill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the process and its workers, at once


# kind -> (how to stop a run, its exit status)
EVENT_KINDS: Dict[str, tuple] = {
    'sigterm': (_sigterm, PREEMPTED_EXIT_CODE),
    'sigkill': (_sigkill, -signal.SIGKILL),
}


def _events(rng: random.Random) -> List[Event]:
    """Two SIGTERMs and two SIGKILLs, one in each quarter of the run, in a random order."""
    quarter = MAX_EPOCHS * ITERS_PER_EPOCH // 4
    kinds = ['sigterm', 'sigterm', 'sigkill', 'sigkill']
    rng.shuffle(kinds)
    return [Event(kind, n * quarter + rng.randint(3, quarter - 3)) for n, kind in enumerate(kinds)]


def _inject_bad_samples(root: str) -> List[str]:
    """A corrupt image and a self-intersecting polygon, which the data checks let through."""
    ann_file = osp.join(root, 'annotations', 'instances_train.json')
    with open(ann_file) as f:
        data = json.load(f)
    corrupt = osp.join(root, 'train', data['images'][9]['file_name'])
    with open(corrupt, 'r+b') as f:
        f.seek(40)
        f.write(b'\0' * 200)
    crossed = data['images'][17]
    ann = next(a for a in data['annotations'] if a['image_id'] == crossed['id'])
    ann['segmentation'] = [[10.0, 10.0, 30.0, 30.0, 30.0, 10.0, 10.0, 30.0]]
    with open(ann_file, 'w') as f:
        json.dump(data, f)
    return [corrupt, osp.join(root, 'train', crossed['file_name'])]


def _command(config: str, work: str, opts: Sequence[str], resume: bool) -> List[str]:
    return [sys.executable, TRAIN, config, '--work-dir', work,
            *(['--resume'] if resume else []), '--cfg-options', *opts]  # fmt: skip


def _iters_logged(log: str) -> int:
    if not osp.exists(log):
        return 0
    with open(log) as f:
        logged = re.findall(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/\d+\]', f.read())
    return max(((int(e) - 1) * ITERS_PER_EPOCH + int(i) for e, i in logged), default=0)


def _stop_at(proc: subprocess.Popen, out: str, event: Event, why: str) -> int:
    """Wait until the run has logged ``event.at`` iterations, stop it; its exit status."""
    stop, _ = EVENT_KINDS[event.kind]
    deadline = time.monotonic() + 300
    try:
        while _iters_logged(out) < event.at:
            assert proc.poll() is None, f'the run ended before {event} ({why})'
            assert time.monotonic() < deadline, f'{event} not reached in time ({why})'
            time.sleep(0.02)
        stop(proc)
        return proc.wait(timeout=120)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of the run outlives the test
        except ProcessLookupError:
            pass
        proc.wait()


def _metrics(work: str) -> Dict[str, float]:
    entries = []
    for path in glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            entries += [json.loads(line) for line in f]
    evals = [e for e in entries if 'coco/bbox_mAP' in e]
    assert evals, 'no evaluation was logged'
    return {k: v for k, v in evals[-1].items() if k.startswith('coco/')}


@pytest.mark.slow
def test_soak_events_then_resume_equals_undisturbed(
    tmp_path, tiny_shapes: str, data_opts: Callable, tool_env: Dict[str, str]
) -> None:
    seed = int(os.environ.get('MMFISH_SOAK_SEED', SOAK_SEED))
    events = _events(random.Random(seed))
    why = f'MMFISH_SOAK_SEED={seed}, events {events}'
    tool_env = {
        **tool_env,
        'PYTHONPATH': TEST_DATA_PYTHONPATH,
        **{name: str(step) for name, step in FAULTS.items()},
    }
    config = config_importing('inject_faults', str(tmp_path / 'soak.py'))
    root = str(tmp_path / 'data')
    shutil.copytree(tiny_shapes, root)
    bad = _inject_bad_samples(root)
    opts = data_opts(root) + OPTIONS
    last = MAX_EPOCHS * ITERS_PER_EPOCH

    disturbed = str(tmp_path / 'disturbed')
    for n, event in enumerate(events):
        out = str(tmp_path / f'run{n}.out')
        with open(out, 'w') as log:
            proc = subprocess.Popen(
                _command(config, disturbed, opts, resume=n > 0), cwd=ROOT, env=tool_env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            status = _stop_at(proc, out, event, why)
        assert status == EVENT_KINDS[event.kind][1], f'{open(out).read()[-3000:]}\n({why})'

    final = subprocess.run(
        _command(config, disturbed, opts, resume=True), cwd=ROOT, env=tool_env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert final.returncode == 0, f'{(final.stdout + final.stderr)[-3000:]}\n({why})'

    undisturbed = str(tmp_path / 'undisturbed')
    ref = subprocess.run(
        _command(config, undisturbed, opts, resume=False), cwd=ROOT, env=tool_env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert ref.returncode == 0, (ref.stdout + ref.stderr)[-3000:]
    runs = [open(p).read() for p in sorted(glob.glob(str(tmp_path / 'run*.out')))]
    for log in (''.join(runs) + final.stdout + final.stderr, ref.stdout + ref.stderr):
        # the disturbed run may meet a fault twice: a SIGKILL after it resumes before it
        assert f"Iteration {FAULTS['MMFISH_NAN_LOSS_ITERS']}: non-finite loss" in log, why
        assert f"Iteration {FAULTS['MMFISH_NAN_GRAD_ITERS']}: non-finite gradient" in log, why

    a, b = (torch.load(osp.join(w, f'iter_{last}.pth')) for w in (disturbed, undisturbed))
    for checkpoint in (a, b):  # the skips are counted once, across resumes too
        assert checkpoint['message_hub']['runtime_info']['non_finite_steps'] == len(FAULTS), why
    a, b = a['state_dict'], b['state_dict']
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:3]} ({why})'
    assert _metrics(disturbed) == _metrics(undisturbed), why
    reports = []
    for work in (disturbed, undisturbed):
        with open(osp.join(work, REPORT_NAME)) as f:
            reports.append(json.load(f))
    assert reports[0] == reports[1], why
    assert sorted(reports[0]['files']) == sorted(bad)
    assert all(len(e['epochs']) == MAX_EPOCHS for e in reports[0]['files'].values())
