"""Samples keyed by (seed, epoch, index): the same draws whatever the workers, none from the main
process's generators; the keys of each sampler kind; every mmfish config has it on."""

import glob
import os.path as osp
import random
from typing import List

import numpy as np
import pytest
import torch
import torch.utils.data._utils as loader_utils
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, InfiniteSampler
from torch.utils.data import DataLoader, Dataset

from mmfish.datasets.keyed import KeyedBatchSampler, SampleKey, is_keyed, keyed_dataloader
from mmfish.testing import ROOT, TEST_DATA

RESUMABLE_LOOPS = ('ResumableEpochBasedTrainLoop', 'ResumableIterBasedTrainLoop')


class Draws(Dataset):
    """Each item is what Python's, numpy's and torch's global generators give at its load."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple:
        return index, random.random(), float(np.random.rand()), float(torch.rand(()))


def _as_list(batch: list) -> list:
    return list(batch)


def _loader(num_workers: int, persistent: bool = False, seeded: bool = True) -> DataLoader:
    sampler = DefaultSampler(Draws(), shuffle=True, seed=3)
    plain = DataLoader(
        Draws(), batch_size=3, sampler=sampler, num_workers=num_workers,
        persistent_workers=persistent, collate_fn=_as_list,
    )  # fmt: skip
    return keyed_dataloader(plain, seeded=seeded)


def _epoch(loader: DataLoader, epoch: int) -> List[tuple]:
    loader.sampler.set_epoch(epoch)
    items = []
    for batch, skipped in loader:
        assert skipped == []
        items += batch
    return items


@pytest.fixture(autouse=True)
def quick_worker_shutdown(monkeypatch) -> None:
    monkeypatch.setattr(loader_utils, 'MP_STATUS_CHECK_INTERVAL', 0.2)


def test_the_draws_are_a_function_of_the_key_alone() -> None:
    runs = {}
    for workers, persistent in [(0, False), (1, True), (2, True), (2, False)]:
        loader = _loader(workers, persistent)
        runs[workers, persistent] = [_epoch(loader, e) for e in (0, 1, 2)]
    reference = runs[0, False]
    assert all(run == reference for run in runs.values()), 'the workers changed the draws'
    assert reference[0] != reference[1]  # another epoch, other draws and order
    by_index = [{item[0]: item[1:] for item in epoch} for epoch in reference]
    assert by_index[0][4] != by_index[1][4]


def test_loading_leaves_the_main_process_generators_alone() -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    _epoch(_loader(0), 0)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_without_seeding_the_draws_depend_on_the_workers() -> None:
    """The opt-out: mmengine's behaviour (one worker's generator runs on across epochs)."""
    plain = [_epoch(_loader(0, seeded=False), 1)]
    persistent = _loader(1, persistent=True, seeded=False)
    _epoch(persistent, 0)
    assert _epoch(persistent, 1) != plain[0]


def test_keys_of_each_sampler_kind() -> None:
    dataset = Draws()
    default = KeyedBatchSampler(
        torch.utils.data.BatchSampler(DefaultSampler(dataset, seed=7), 4, False)
    )
    default.sampler.set_epoch(2)
    batches = list(default)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert {(k.seed, k.epoch) for b in batches for k in b} == {(7, 2)}
    default.skip_batches = 2
    assert list(default) == batches[2:]

    infinite = KeyedBatchSampler(
        torch.utils.data.BatchSampler(InfiniteSampler(dataset, seed=5), 4, False)
    )
    keys = [k for _, b in zip(range(5), infinite) for k in b]  # 20 indices: two passes
    assert [k.epoch for k in keys] == [0] * 10 + [1] * 10
    assert sorted(k.index for k in keys[:10]) == list(range(10))

    unseeded = KeyedBatchSampler(default.batch_sampler, seeded=False)
    assert {k.seed for b in unseeded for k in b} == {None}


def test_mmdets_aspect_ratio_batch_sampler(tiny_shapes: str) -> None:
    """mmdet's COCO configs batch by aspect ratio (the batch sampler reads the data infos)."""
    from mmdet.datasets import AspectRatioBatchSampler, CocoDataset

    dataset = CocoDataset(
        data_root=tiny_shapes, ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), metainfo=dict(classes=('circle', 'rectangle', 'triangle')),
        pipeline=[dict(type='LoadImageFromFile')],
    )  # fmt: skip
    sampler = DefaultSampler(dataset, seed=0)
    plain = DataLoader(dataset, batch_sampler=AspectRatioBatchSampler(sampler, 2),
                       collate_fn=_as_list)  # fmt: skip
    loader = keyed_dataloader(plain)
    assert is_keyed(loader) and loader.sampler is sampler and len(loader) == 12
    images = [item['img_path'] for batch, _ in loader for item in batch]
    assert len(set(images)) == 24


def _configs() -> List[str]:
    """mmfish's configs and the tests' (not configs/baselines/: mmdet's ResNet-50 recipes)."""
    found = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    found += glob.glob(osp.join(TEST_DATA, 'tiny_*config.py'))
    baselines = osp.join(ROOT, 'configs', 'baselines', '')
    return sorted(p for p in found if '_base_' not in p and not p.startswith(baselines))


@pytest.mark.parametrize('config', _configs(), ids=lambda p: osp.relpath(p, ROOT))
def test_every_mmfish_config_trains_with_seeded_augmentation(config: str) -> None:
    train_cfg = Config.fromfile(config).train_cfg
    assert train_cfg.type in RESUMABLE_LOOPS
    assert train_cfg.get('seeded_augmentation', True) is True


def test_keys_and_keyed_datasets_survive_a_trip_to_a_spawned_worker() -> None:
    import pickle

    from mmfish.datasets.keyed import KeyedDataset

    key = SampleKey(seed=1, epoch=2, index=3)
    assert pickle.loads(pickle.dumps(key)) == key
    dataset = KeyedDataset(Draws())
    assert pickle.loads(pickle.dumps(dataset))[key] == dataset[key]
