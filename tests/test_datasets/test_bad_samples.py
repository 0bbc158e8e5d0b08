"""Bad samples: found by the data checks where it is cheap, else skipped when loaded, counted,
reported per file, and bounded (a clean stop with a checkpoint and the files named).

Each kind is injected into a copy of the generated shapes data: a corrupt image, a missing image,
an empty image file, a box with a non-finite value or a negative side, an empty, degenerate or
self-intersecting polygon.
"""

import glob
import json
import logging
import os
import os.path as osp
import shutil
import signal
from typing import Callable, Dict, List

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from mmfish.datasets.bad_samples import REPORT_NAME, BadSamples, TooManyBadSamples, default_bound
from mmfish.datasets.data_checks import DataCheckError, check_coco_annotations
from mmfish.datasets.keyed import KeyedDataset, SampleKey
from mmfish.testing import TINY_CONFIG

BOW_TIE = [[10.0, 10.0, 30.0, 30.0, 30.0, 10.0, 10.0, 30.0]]  # two edges cross at (20, 20)


def _copy(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def _annotations(root: str) -> str:
    return osp.join(root, 'annotations', 'instances_train.json')


def _edit_annotation(root: str, image_index: int, **changes) -> str:
    """Change the first annotation of the ``image_index``-th image; its file name."""
    path = _annotations(root)
    with open(path) as f:
        data = json.load(f)
    image = data['images'][image_index]
    ann = next(a for a in data['annotations'] if a['image_id'] == image['id'])
    ann.update(changes)
    with open(path, 'w') as f:
        json.dump(data, f)  # NaN and Infinity are written as such
    return image['file_name']


def _image(root: str, image_index: int) -> str:
    with open(_annotations(root)) as f:
        return osp.join(root, 'train', json.load(f)['images'][image_index]['file_name'])


def _corrupt(root: str, image_index: int) -> str:
    path = _image(root, image_index)
    with open(path, 'r+b') as f:
        f.seek(40)
        f.write(b'\0' * 200)  # a PNG whose header is intact and whose data is not
    return path


def _truncate(root: str, image_index: int) -> str:
    path = _image(root, image_index)
    open(path, 'w').close()
    return path


def _remove(root: str, image_index: int) -> str:
    path = _image(root, image_index)
    os.remove(path)
    return path


@pytest.fixture
def cfg_for(data_opts: Callable) -> Callable[[str], Config]:
    def make(root: str) -> Config:
        cfg = Config.fromfile(TINY_CONFIG)
        cfg.merge_from_dict(dict(o.split('=', 1) for o in data_opts(root)))
        return cfg

    return make


# --------------------------------------------------------------- 1. before training: data checks
@pytest.mark.parametrize(
    'inject, expected',
    [
        (lambda r: _edit_annotation(r, 3, bbox=[1.0, 2.0, float('nan'), 5.0]), 'non-finite box'),
        (lambda r: _edit_annotation(r, 3, bbox=[1.0, 2.0, float('inf'), 5.0]), 'non-finite box'),
        (lambda r: _edit_annotation(r, 3, bbox=[10.0, 2.0, -4.0, 5.0]), 'negative-size box'),
        (lambda r: _edit_annotation(r, 3, segmentation=[]), 'empty segmentation'),
        (lambda r: _edit_annotation(r, 3, segmentation=[[]]), 'empty polygon'),
        (lambda r: _edit_annotation(r, 3, segmentation=[[1, 2, 3, 4]]), 'polygon of 4 coord'),
        (lambda r: _truncate(r, 3), r'empty image files \(0 bytes\)'),
        (lambda r: _remove(r, 3), '1 of 24 images are missing'),
    ],
    ids=['nan-box', 'inf-box', 'negative-box', 'empty-segm', 'empty-polygon', 'two-points',
         'empty-file', 'missing-image'],
)  # fmt: skip
def test_data_checks_find_them_before_training(
    cfg_for: Callable, tmp_path, tiny_shapes: str, inject: Callable, expected: str
) -> None:
    root = _copy(tiny_shapes, str(tmp_path / 'd'))
    inject(root)
    with pytest.raises(DataCheckError, match=expected) as error:
        check_coco_annotations(cfg_for(root))
    assert _annotations(root) in str(error.value)


def test_data_checks_leave_polygons_alone_without_masks(cfg_for: Callable, tmp_path, tiny_shapes):
    """A detection-only pipeline (no masks loaded): empty segmentations are no problem."""
    root = _copy(tiny_shapes, str(tmp_path / 'd'))
    _edit_annotation(root, 3, segmentation=[])
    cfg = cfg_for(root)
    cfg.train_dataloader.dataset.pipeline[1].with_mask = False
    assert _annotations(root) in check_coco_annotations(cfg)


# ------------------------------------------------------------ 2. when loaded: skipped, in its place
def _dataset(cfg: Config, **kwargs) -> KeyedDataset:
    init_default_scope('mmdet')
    from mmdet.registry import DATASETS

    return KeyedDataset(DATASETS.build(cfg.train_dataloader.dataset), **kwargs)


def _boxes(item) -> torch.Tensor:
    return item['data_samples'].gt_instances.bboxes.tensor


@pytest.mark.parametrize(
    'inject, error',
    [
        (lambda r: _corrupt(r, 5), 'failed to load image'),
        (lambda r: _remove(r, 5), 'FileNotFoundError'),
        (lambda r: _edit_annotation(r, 5, bbox=[1.0, 2.0, float('inf'), 5.0]), 'non-finite box'),
        (lambda r: _edit_annotation(r, 5, segmentation=[]), "KeyError: 'mask'"),
        (lambda r: _edit_annotation(r, 5, segmentation=BOW_TIE), 'self-intersecting polygon'),
    ],
    ids=['corrupt-image', 'missing-image', 'inf-box', 'empty-segm', 'self-intersecting'],
)
def test_a_bad_sample_is_replaced_by_a_drawn_one(
    cfg_for: Callable, tmp_path, tiny_shapes: str, inject: Callable, error: str
) -> None:
    """The key decides the replacement and its augmentation: the same key, the same sample."""
    root = _copy(tiny_shapes, str(tmp_path / 'd'))
    inject(root)
    dataset = _dataset(cfg_for(root), skip_self_intersecting=True)
    key = SampleKey(seed=0, epoch=1, index=5)
    (item, skipped), (again, _) = dataset[key], dataset[key]
    assert [(s.index, s.epoch) for s in skipped] == [(5, 1)]
    assert error in skipped[0].error and osp.join(root, 'train') in skipped[0].file
    assert item['data_samples'].img_path != skipped[0].file
    assert torch.equal(item['inputs'], again['inputs']) and torch.equal(_boxes(item), _boxes(again))
    good, none = dataset[SampleKey(seed=0, epoch=1, index=6)]
    assert none == []


def test_self_intersecting_polygons_are_used_unless_asked(cfg_for, tmp_path, tiny_shapes: str):
    root = _copy(tiny_shapes, str(tmp_path / 'd'))
    name = _edit_annotation(root, 5, segmentation=BOW_TIE)
    _, skipped = _dataset(cfg_for(root))[SampleKey(seed=0, epoch=0, index=5)]
    assert skipped == []
    assert check_coco_annotations(cfg_for(root))  # not refused before training either
    assert name


def test_bad_samples_count_files_once_per_epoch_and_write_the_report(tmp_path) -> None:
    from mmfish.datasets.keyed import SkippedSample

    report = str(tmp_path / REPORT_NAME)
    bad = BadSamples(report, bound=1)
    a, b = SkippedSample('a.png', 3, 0, 'broken'), SkippedSample('b.png', 4, 0, 'gone')
    assert bad.add([a]) == 1 and bad.add([a]) == 0 and not bad.over_bound
    assert bad.add([a._replace(epoch=1)]) == 0  # a new occurrence of a known file
    with open(report) as f:
        assert json.load(f)['files']['a.png']['epochs'] == [0, 1]
    bad.add([b])
    assert bad.over_bound
    message = str(bad.error('/w/iter_7.pth'))
    assert '\n' not in message and 'a.png (broken)' in message and 'b.png (gone)' in message
    assert 'iter_7.pth' in message and report in message
    again = BadSamples(str(tmp_path / 'resumed' / REPORT_NAME), bound=1)
    (tmp_path / 'resumed').mkdir()
    again.load_state_dict(bad.state_dict())
    assert again.names == ['a.png', 'b.png']
    assert json.loads((tmp_path / 'resumed' / REPORT_NAME).read_text())['skipped_files'] == 2
    clean = BadSamples(str(tmp_path / 'clean.json'), bound=1)
    clean.load_state_dict(BadSamples(None, bound=1).state_dict())  # a run that met none
    assert clean.names == [] and not (tmp_path / 'clean.json').exists()
    assert default_bound(24) == 1 and default_bound(118287) == 118
    with pytest.raises(ValueError, match='max_bad_samples must be an integer >= 0'):
        BadSamples(None, bound=-1)


# ---------------------------------------------------------------- 3. in training: counted, bounded
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _epoch_order(seed: int, epoch: int, size: int = 24) -> List[int]:
    """DefaultSampler's shuffled order of an epoch."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def _weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _RemoveAfterEpoch(Hook):
    """Removes a file once epoch 1 is done: a file that goes bad in the middle of a run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_train_epoch(self, runner) -> None:
        if runner.epoch == 0 and osp.exists(self.path):
            os.remove(self.path)


@pytest.mark.slow
def test_training_skips_then_stops_with_a_checkpoint(cfg_for: Callable, tmp_path, tiny_shapes):
    """A corrupt image (bound: 1 of 24) is skipped in epoch 1; a second bad file, met in batch 4
    of epoch 2, stops the run after a checkpoint of iteration 15; repaired, the run resumes and
    ends as one that met only the first."""
    root = _copy(tiny_shapes, str(tmp_path / 'd'))
    first, second = _epoch_order(0, 0)[4], _epoch_order(0, 1)[7]  # batch 3, batch 4 of epoch 2
    assert first != second
    bad_first, bad_second = _corrupt(root, first), _image(root, second)
    shutil.copy(bad_second, str(tmp_path / 'kept.png'))

    cfg = cfg_for(root)
    for stage in ('val', 'test'):
        cfg.update({f'{stage}_dataloader': None, f'{stage}_cfg': None, f'{stage}_evaluator': None})
    cfg.log_level = 'WARNING'

    def runner(work: str, resume: bool = False) -> Runner:
        return Runner.from_cfg(Config(dict(cfg, work_dir=work, resume=resume)))

    work = str(tmp_path / 'work')
    stopped = runner(work)
    stopped.register_hook(_RemoveAfterEpoch(bad_second))
    warnings = _Records()
    stopped.logger.addHandler(warnings)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(TooManyBadSamples) as error:
            stopped.train()
    finally:
        signal.signal(signal.SIGTERM, previous)
    message = str(error.value)
    assert '\n' not in message and bad_first in message and bad_second in message
    assert 'max_bad_samples=1' in message and 'iter_15.pth' in message, message
    assert any(f'Skipped a bad training sample, {bad_first}' in m for m in warnings.messages)
    with open(osp.join(work, REPORT_NAME)) as f:
        report = json.load(f)
    assert report['skipped_files'] == 2 and report['files'][bad_first]['epochs'] == [0, 1]
    assert report['files'][bad_second]['epochs'] == [1]
    assert 'failed to load image' in report['files'][bad_first]['error']
    assert 'FileNotFoundError' in report['files'][bad_second]['error']
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_15.pth')
    state = torch.load(osp.join(work, 'iter_15.pth'))['resume_state']['processes'][0]
    assert sorted(state['bad_samples']['files']) == sorted([bad_first, bad_second])

    # The second file restored: the resumed run counts on from the checkpoint and ends as the
    # run that met only the first file.
    shutil.copy(str(tmp_path / 'kept.png'), bad_second)
    resumed = _weights(runner(work, resume=True).train())
    reference = _weights(runner(str(tmp_path / 'ref')).train())
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    with open(osp.join(work, REPORT_NAME)) as f:
        assert sorted(json.load(f)['files']) == sorted([bad_first, bad_second])


@pytest.mark.slow
def test_train_tool_stops_with_one_line(tmp_path, tiny_shapes: str, data_opts, run_tool) -> None:
    """Through tools/train.py: two corrupt images (the data checks let them through) against a
    bound of one: exit status 2, one line naming both, a checkpoint and the report on disk."""
    root = _copy(tiny_shapes, str(tmp_path / 'd'))
    order = _epoch_order(0, 0)
    bad = sorted([_corrupt(root, order[2]), _corrupt(root, order[9])])  # batches 2 and 5
    work = str(tmp_path / 'work')
    proc = run_tool('train.py', TINY_CONFIG, '--work-dir', work, '--cfg-options',
                    *data_opts(root), 'train_cfg.max_epochs=1')  # fmt: skip
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('train.py: error: TooManyBadSamples: 2 bad training samples (')
    assert all(path in last for path in bad) and 'Traceback' not in proc.stderr
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_4.pth')  # batches 1-4 trained
    with open(osp.join(work, REPORT_NAME)) as f:
        assert sorted(json.load(f)['files']) == bad


@pytest.mark.slow
def test_iteration_loop_stops_where_it_resumes(tmp_path, seg_shapes: str) -> None:
    """The tiny segmentation config (InfiniteSampler, 4 batches a pass), a corrupt label map and
    max_bad_samples=0: the run stops at the batch that holds it, before training on it; the
    file restored, the stop's checkpoint resumes to the weights of a run that never met it."""
    pytest.importorskip('mmseg')
    from mmfish.testing import TINY_SEG_CONFIG

    root = _copy(seg_shapes, str(tmp_path / 'd'))
    label_map = sorted(glob.glob(osp.join(root, 'seg_maps', 'train', '*.png')))[5]
    shutil.copy(label_map, str(tmp_path / 'kept.png'))
    with open(label_map, 'wb') as f:
        f.write(b'not a png')
    cfg = Config.fromfile(TINY_SEG_CONFIG)
    cfg.train_dataloader.dataset.data_root = root
    cfg.train_cfg.max_bad_samples = 0
    for stage in ('val', 'test'):
        cfg.update({f'{stage}_dataloader': None, f'{stage}_cfg': None, f'{stage}_evaluator': None})
    cfg.log_level = 'WARNING'

    def runner(work: str, resume: bool = False) -> Runner:
        return Runner.from_cfg(Config(dict(cfg, work_dir=work, resume=resume)))

    work = str(tmp_path / 'work')
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(TooManyBadSamples, match='max_bad_samples=0') as error:
            runner(work).train()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert label_map in str(error.value)
    with open(osp.join(work, 'last_checkpoint')) as f:
        checkpoint = torch.load(f.read().strip())
    done = checkpoint['meta']['iter']
    assert checkpoint['resume_state']['processes'][0]['data'] == dict(epoch=0, batches=done)

    shutil.copy(str(tmp_path / 'kept.png'), label_map)
    resumed = _weights(runner(work, resume=True).train())
    reference = _weights(runner(str(tmp_path / 'ref')).train())
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


@pytest.mark.slow
@pytest.mark.parametrize(
    'inject, error',
    [
        (_corrupt, 'failed to load image'),
        (_remove, 'FileNotFoundError'),
        (lambda r, i: _edit_annotation(r, i, bbox=[1.0, 2.0, float('inf'), 5.0]), 'non-finite'),
        (lambda r, i: _edit_annotation(r, i, segmentation=[]), "KeyError: 'mask'"),
        (lambda r, i: _edit_annotation(r, i, segmentation=BOW_TIE), 'self-intersecting'),
    ],
    ids=['corrupt-image', 'missing-image', 'inf-box', 'empty-segm', 'self-intersecting'],
)
def test_each_kind_is_skipped_mid_epoch(
    cfg_for: Callable, tmp_path, tiny_shapes: str, inject: Callable, error: str
) -> None:
    """Each kind in batch 4 of the first epoch: skipped, reported, and the epoch trains on."""
    root = _copy(tiny_shapes, str(tmp_path / 'd'))
    index = _epoch_order(0, 0)[7]
    inject(root, index)
    cfg = cfg_for(root)
    cfg.merge_from_dict({'train_cfg.max_epochs': 1, 'train_cfg.skip_self_intersecting': True})
    for stage in ('val', 'test'):
        cfg.update({f'{stage}_dataloader': None, f'{stage}_cfg': None, f'{stage}_evaluator': None})
    cfg.log_level = 'WARNING'
    work = str(tmp_path / 'work')
    Runner.from_cfg(Config(dict(cfg, work_dir=work))).train()
    with open(osp.join(work, REPORT_NAME)) as f:
        report = json.load(f)
    ((name, entry),) = report['files'].items()
    assert name == _image(root, index) and error in entry['error'] and entry['epochs'] == [0]
    assert torch.load(osp.join(work, 'epoch_1.pth'))['meta']['iter'] == 12
