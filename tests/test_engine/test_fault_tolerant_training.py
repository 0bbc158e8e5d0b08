"""Training that survives faults: preemption, kills at any moment, bad data, bad arguments.

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
write (two workers, a checkpoint every 5 iterations, only the newest kept).
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
from typing import Any, Callable, Dict, List, Sequence

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmfish.datasets.data_checks import DataCheckError, check_coco_annotations
from mmfish.engine.hooks import PREEMPTED_EXIT_CODE

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CONFIG = osp.join(ROOT, 'tests', 'data', 'tiny_shapes_config.py')
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


def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _dump_json(data: dict, path: str) -> None:
    with open(path, 'w') as f:
        json.dump(data, f)


def _infos(dataset: Any) -> List[dict]:
    """A built dataset's data infos (``data_list`` is emptied once serialised)."""
    return [dataset.get_data_info(i) for i in range(len(dataset))]


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

    # The real resume loads the batches already trained on in epoch 2, restores the random
    # states, finishes, and equals the uninterrupted run bit for bit.
    resumed = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--resume', '--cfg-options', *opts
    )
    assert resumed.returncode == 0, _output(resumed)[-3000:]
    log = _output(resumed)
    assert f'resumed epoch: 1, iter: {stopped_at}' in log
    assert f'loading the {stopped_at - ITERS_PER_EPOCH} batches already trained on' in log
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
    can land inside one. ``MMFISH_CHAOS_SEED`` replays a failed draw.
    """
    seed = int(os.environ.get('MMFISH_CHAOS_SEED', time.time_ns() % 100_000))
    rng = random.Random(seed)
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
    assert ref.returncode == 0, _output(ref)[-3000:]

    slow_config = str(tmp_path / 'slow_writes.py')
    with open(slow_config, 'w') as f:
        f.write(
            f'_base_ = {TINY_CONFIG!r}\n'
            "custom_imports = dict(imports=['mmfish', 'slow_checkpoint_writes'])\n"
        )
    pythonpath = [osp.join(ROOT, 'tests', 'data'), ROOT, tool_env.get('PYTHONPATH', '')]
    env = {**tool_env, 'PYTHONPATH': os.pathsep.join(pythonpath), 'MMFISH_SLOW_WRITE_S': '1'}
    work = str(tmp_path / 'chaos')
    # Kill moments, in iterations done: inside the write of one of the first checkpoints, then at
    # random iterations (plus a random fraction of an iteration) later and later in the run.
    moments = [('write', rng.choice([10, 15]))]
    moments += [('iter', rng.randint(11, 16)), ('iter', rng.randint(17, 23))]
    moments.sort(key=lambda m: m[1])
    why = f'MMFISH_CHAOS_SEED={seed}, kills at {moments}'
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
        assert torch.load(last)['meta']['iter'] % 5 == 0, why
        for path in glob.glob(osp.join(work, '*.pth')):
            torch.load(path)

    final = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--resume', '--cfg-options', *opts
    )
    assert final.returncode == 0, _output(final)[-3000:]
    assert not glob.glob(osp.join(work, '.tmp-*')), why
    differing = _same_weights(osp.join(work, 'iter_24.pth'), osp.join(ref_dir, 'iter_24.pth'))
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:3]} ({why})'
    assert _metrics(_scalars(work, newest_only=True)) == _metrics(_scalars(ref_dir)), why


# ------------------------------------------------------------------------------- 2. bad data
@pytest.fixture
def cfg_for(data_opts: Callable) -> Callable[[str], Config]:
    """The tiny config pointed at a dataset, as tools/train.py would load it."""

    def make(root: str) -> Config:
        cfg = Config.fromfile(TINY_CONFIG)
        cfg.merge_from_dict(dict(o.split('=', 1) for o in data_opts(root)))
        return cfg

    return make


def test_good_data_passes(cfg_for: Callable, tiny_shapes: str) -> None:
    checked = check_coco_annotations(cfg_for(tiny_shapes))
    assert sorted(set(checked)) == sorted(
        osp.join(tiny_shapes, 'annotations', f'instances_{s}.json') for s in ('train', 'val')
    )


def test_missing_annotation_file(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    os.remove(osp.join(root, 'annotations', 'instances_train.json'))
    with pytest.raises(DataCheckError, match='instances_train.json does not exist'):
        check_coco_annotations(cfg_for(root))


def test_truncated_json_names_the_file(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_val.json')
    with open(ann, 'rb') as f:
        text = f.read()
    with open(ann, 'wb') as f:
        f.write(text[:100])
    # mmdet's own error: a bare JSONDecodeError that does not say which file.
    from mmdet.datasets import CocoDataset

    with pytest.raises(json.JSONDecodeError) as mmdet_error:
        CocoDataset(ann_file=ann, data_prefix=dict(img=''), pipeline=[], lazy_init=False)
    assert ann not in str(mmdet_error.value)
    with pytest.raises(DataCheckError) as ours:
        check_coco_annotations(cfg_for(root))
    message = str(ours.value)
    assert ann in message and 'not valid JSON' in message and 'of 100 bytes' in message


@pytest.mark.parametrize(
    'edit, expected',
    [
        (lambda d: d.pop('categories'), r"no list \['categories'\]"),
        (lambda d: d.update(images={}), r"no list \['images'\]"),
        (lambda d: d['annotations'][0].pop('bbox'), 'without a bbox'),
        (lambda d: d['annotations'][1].pop('area'), r'id 2: bbox \[.*\], area None'),
        (lambda d: d['annotations'][0].update(image_id=999), 'image_id 999'),
        (lambda d: d['images'][1].update(id=d['images'][0]['id']), 'duplicate image ids'),
        (lambda d: d['categories'][0].update(name='disc'), r'classes circle are not category'),
    ],
    ids=[
        'no-categories',
        'images-not-a-list',
        'no-bbox',
        'no-area',
        'unknown-image',
        'dup-image',
        'class-names',
    ],
)
def test_malformed_annotations(
    cfg_for: Callable, tmp_path, tiny_shapes: str, edit: Callable, expected: str
) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_train.json')
    data = _load_json(ann)
    edit(data)
    _dump_json(data, ann)
    with pytest.raises(DataCheckError, match=expected) as error:
        check_coco_annotations(cfg_for(root))
    assert ann in str(error.value)


def test_unknown_category_id(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_train.json')
    data = _load_json(ann)
    data['annotations'][0]['category_id'] = 7
    _dump_json(data, ann)
    # mmdet drops the annotation without a word: image 1 loses an object.
    from mmdet.datasets import CocoDataset

    classes = ('circle', 'rectangle', 'triangle')
    dataset = CocoDataset(
        ann_file=ann, metainfo=dict(classes=classes), data_prefix=dict(img=''), pipeline=[]
    )
    img_id = data['annotations'][0]['image_id']
    n_anns = sum(a['image_id'] == img_id for a in data['annotations'])
    info = next(d for d in _infos(dataset) if d['img_id'] == img_id)
    assert len(info['instances']) == n_anns - 1
    ann_id = data['annotations'][0]['id']
    with pytest.raises(DataCheckError, match=f'id {ann_id}: category_id 7'):
        check_coco_annotations(cfg_for(root))


def test_missing_images_are_listed(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    for name in ('000001.png', '000003.png'):
        os.remove(osp.join(root, 'val', name))
    with pytest.raises(DataCheckError) as error:
        check_coco_annotations(cfg_for(root))
    message = str(error.value)
    assert 'instances_val.json' in message
    assert '2 of 4 images are missing from' in message and '000001.png, 000003.png' in message


def test_test_dev_without_annotations_and_skip_switch(
    cfg_for: Callable, tmp_path, tiny_shapes, monkeypatch
) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_val.json')
    data = _load_json(ann)
    data.pop('annotations')
    _dump_json(data, ann)
    cfg = cfg_for(root)
    cfg.test_evaluator.format_only = True  # test-dev: predictions only
    assert check_coco_annotations(cfg, ('test_dataloader',), ('test_evaluator',)) == [ann, ann]
    with pytest.raises(DataCheckError, match=r"no list \['annotations'\]"):
        check_coco_annotations(cfg)  # the val evaluator needs annotations
    monkeypatch.setenv('MMFISH_SKIP_DATA_CHECKS', '1')
    assert check_coco_annotations(cfg) == []


@pytest.mark.slow
def test_tools_stop_on_bad_data_before_the_runner(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    root = _copy_dataset(tiny_shapes, str(tmp_path / 'd'))
    ann = osp.join(root, 'annotations', 'instances_train.json')
    with open(ann, 'a') as f:
        f.write('garbage')
    work = str(tmp_path / 'work')
    train = run_tool('train.py', TINY_CONFIG, '--work-dir', work, '--cfg-options', *data_opts(root))
    assert train.returncode != 0
    assert 'DataCheckError' in train.stderr and ann in train.stderr
    assert 'Extra data at line 2' in train.stderr
    assert not osp.exists(work)  # nothing was started or written

    os.remove(osp.join(root, 'val', '000002.png'))
    test = run_tool(
        'test.py', TINY_CONFIG, 'no_checkpoint_needed.pth', '--work-dir', work,
        '--cfg-options', *data_opts(root),
    )  # fmt: skip
    assert test.returncode != 0
    assert 'DataCheckError' in test.stderr and '000002.png' in test.stderr
    assert 'instances_val.json' in test.stderr and not osp.exists(work)


def _write_image(path: str, img: np.ndarray) -> None:
    assert cv2.imwrite(path, img)


def _quirky_dataset(src: str, dst: str) -> str:
    """A copy with grayscale and RGBA images, images without objects, and 20x20 images."""
    root = _copy_dataset(src, dst)
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        ann = osp.join(root, 'annotations', f'instances_{split}.json')
        data = _load_json(ann)
        images = data['images']
        gray_path = osp.join(root, split, images[0]['file_name'])
        _write_image(gray_path, cv2.cvtColor(cv2.imread(gray_path), cv2.COLOR_BGR2GRAY))
        rgba_path = osp.join(root, split, images[1]['file_name'])
        _write_image(rgba_path, cv2.cvtColor(cv2.imread(rgba_path), cv2.COLOR_BGR2BGRA))
        next_img = max(i['id'] for i in images) + 1
        next_ann = max(a['id'] for a in data['annotations']) + 1
        # An image without annotations.
        _write_image(osp.join(root, split, 'empty.png'), rng.integers(0, 255, (64, 64, 3), 'u1'))
        images.append(dict(id=next_img, file_name='empty.png', width=64, height=64))
        # A 20x20 image (smaller than FishNet's stride of 32) with one square.
        tiny = rng.integers(0, 255, (20, 20, 3), 'u1')
        tiny[4:14, 4:14] = 255
        _write_image(osp.join(root, split, 'tiny.png'), tiny)
        images.append(dict(id=next_img + 1, file_name='tiny.png', width=20, height=20))
        data['annotations'].append(
            dict(
                id=next_ann,
                image_id=next_img + 1,
                category_id=2,
                bbox=[4, 4, 10, 10],
                area=100,
                iscrowd=0,
                segmentation=[[4, 4, 14, 4, 14, 14, 4, 14]],
            )  # fmt: skip
        )
        _dump_json(data, ann)
    return root


def test_grayscale_and_rgba_load_as_three_channels(tmp_path, tiny_shapes: str) -> None:
    from mmcv.transforms import LoadImageFromFile

    root = _quirky_dataset(tiny_shapes, str(tmp_path / 'q'))
    gray = osp.join(root, 'train', '000000.png')
    rgba = osp.join(root, 'train', '000001.png')
    assert cv2.imread(gray, cv2.IMREAD_UNCHANGED).ndim == 2
    assert cv2.imread(rgba, cv2.IMREAD_UNCHANGED).shape[2] == 4
    load = LoadImageFromFile()  # the configs' default: color_type='color'
    for path in (gray, rgba):
        assert load(dict(img_path=path))['img'].shape == (64, 64, 3)
    # 'unchanged' would keep one or four channels, which the 3-channel normalisation rejects.
    assert LoadImageFromFile(color_type='unchanged')(dict(img_path=gray))['img'].ndim == 2


def test_empty_and_tiny_images_in_datasets(cfg_for: Callable, tmp_path, tiny_shapes: str) -> None:
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules()
    root = _quirky_dataset(tiny_shapes, str(tmp_path / 'q'))
    cfg = cfg_for(root)
    check_coco_annotations(cfg)  # valid: nothing to complain about
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    # filter_cfg=dict(filter_empty_gt=True, min_size=32): training drops both extras;
    # evaluation keeps every image.
    names = {osp.basename(d['img_path']) for d in _infos(train)}
    assert len(train) == 24 and not names & {'empty.png', 'tiny.png'}
    assert len(val) == 6
    tiny = val[5]  # Resize scales 20x20 up to 64x64
    assert tiny['data_samples'].img_shape == (64, 64) and tiny['inputs'].shape == (3, 64, 64)


def test_images_smaller_than_the_stride_without_resize(
    cfg_for: Callable, tmp_path, tiny_shapes: str
) -> None:
    """A 20x20 image, not resized: padding to 32 makes it work; without padding, a clear error."""
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    from mmengine.dataset import pseudo_collate

    register_all_modules()
    root = _quirky_dataset(tiny_shapes, str(tmp_path / 'q'))
    cfg = cfg_for(root)
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.filter_cfg = None
    ds_cfg.pipeline = [p for p in ds_cfg.pipeline if p['type'] != 'Resize']
    dataset = DATASETS.build(ds_cfg)
    tiny = next(i for i, d in enumerate(_infos(dataset)) if d['img_path'].endswith('tiny.png'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    # Training BN needs more than one value per channel at stride 32: a batch of two.
    batch = model.data_preprocessor(pseudo_collate([dataset[tiny], dataset[tiny]]), True)
    assert batch['inputs'].shape == (2, 3, 32, 32)  # pad_size_divisor=32
    loss, _ = model.parse_losses(model(**batch, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    sample = dataset[tiny]
    sample['data_samples'].set_metainfo(dict(scale_factor=(1.0, 1.0)))  # set by Resize in mmdet
    with torch.no_grad():
        preds = model(**model.data_preprocessor(pseudo_collate([sample])), mode='predict')
        assert preds[0].pred_instances.bboxes.shape[1] == 4
        model.data_preprocessor.pad_size_divisor = 1
        with pytest.raises(ValueError, match='multiples of 32, got 20x20.*pad_size_divisor=32'):
            model(**model.data_preprocessor(pseudo_collate([sample])), mode='predict')


@pytest.mark.slow
def test_quirky_but_valid_data_trains_and_evaluates(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    root = _quirky_dataset(tiny_shapes, str(tmp_path / 'q'))
    work = str(tmp_path / 'work')
    proc = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', work, '--cfg-options', *data_opts(root),
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    )  # fmt: skip
    assert proc.returncode == 0, _output(proc)[-3000:]
    metrics = _metrics(_scalars(work))
    assert 'coco/bbox_mAP' in metrics and 'coco/segm_mAP' in metrics


# ------------------------------------------------------------------ 3. bad backbone arguments
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
    assert proc.returncode != 0
    last_line = proc.stderr.strip().splitlines()[-1]
    assert expected in last_line, proc.stderr[-2000:]
    # raised by FishNet's constructor, or by Python calling it
    assert 'mmfish/models/backbones/fishnet.py' in proc.stderr or 'FishNet.__init__()' in last_line
    assert 'Epoch(train)' not in _output(proc)
    assert not glob.glob(osp.join(work, '*.pth'))


# -------------------------------------------------------------- 4. a batch BatchNorm cannot use
def test_single_value_per_channel_names_cause_and_fix() -> None:
    from mmfish.models import FishNet

    tiny = Config.fromfile(TINY_CONFIG).model.backbone.arch
    tiny.pop('_delete_', None)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)  # one image, 1x1 at stride 32: one value per channel
    with pytest.raises(ValueError) as error:
        FishNet(arch=dict(tiny)).train()(x)
    message = str(error.value)
    for cause_or_fix in ('single value per channel', '1 image(s) of 32x32', 'batch_size >= 2',
                         'at least 64 px', 'norm_eval=True', 'GroupNorm'):  # fmt: skip
        assert cause_or_fix in message, message
    assert 'Expected more than 1 value per channel' in str(error.value.__cause__)
    # The fixes it names work.
    FishNet(arch=dict(tiny)).train()(torch.randn(2, 3, 32, 32))
    FishNet(arch=dict(tiny)).train()(torch.randn(1, 3, 64, 32))
    FishNet(arch=dict(tiny), norm_eval=True).train()(x)
    gn = dict(type='GN', num_groups=4, requires_grad=True)  # the tiny widths: 4 to 272
    FishNet(arch=dict(tiny), norm_cfg=gn).train()(x)
    for arch in ('fishnet99', 'fishnet150', 'fishnet201'):  # the message's 16 groups fit them
        FishNet(arch=arch, norm_cfg=dict(gn, num_groups=16))


# ------------------------------------------------------------------------ 5. the random states
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
