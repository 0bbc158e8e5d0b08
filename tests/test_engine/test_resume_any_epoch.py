"""Exact resume at any iteration of any epoch with persistent data-loading workers.

With seeded augmentation (the resumable loops' default, :mod:`mmfish.datasets.keyed`) every
random draw of the data pipeline is a function of (seed, epoch, sample index), so the random
states of data-loading workers, persistent or not, play no part. The tiny detection config
(random flips, random RPN / RoI sampling, a shuffled sampler) trains 3 epochs with 0, 1 and 2
persistent workers, stopped in epoch 2 and again in epoch 3 and resumed each time; the tiny
segmentation config (random flips, dropout, mmseg's ``InfiniteSampler``) does the same over 3
passes of its iteration-based loop. Each ends with the weights of the uninterrupted run without
workers, bit for bit.
Runs are in-process, stopped by an exception after the iteration (the kills of a real process
are in ``test_soak_training.py`` and ``test_fault_tolerant_training.py``).
"""

from typing import Dict, List

import pytest
import torch
import torch.utils.data._utils as loader_utils
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmfish.testing import TINY_CONFIG, TINY_SEG_CONFIG, data_options


@pytest.fixture(autouse=True)
def quick_worker_shutdown(monkeypatch) -> None:
    """Persistent workers of a finished in-process run take 5 s each to shut down (torch's
    status-check interval) when the Runner is collected; 0.2 s keeps the tests short."""
    monkeypatch.setattr(loader_utils, 'MP_STATUS_CHECK_INTERVAL', 0.2)


class Interrupt(Hook):
    """Raises after iteration ``at``, once the checkpoint hook has run."""

    priority = 'LOWEST'

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at:
            raise RuntimeError('interrupted')


def _weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _differing(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> List[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def _train(cfg: Config, work_dir: str, stop_at: int = 0, resume: bool = False) -> torch.nn.Module:
    runner = Runner.from_cfg(Config(dict(cfg, work_dir=work_dir, resume=resume)))
    if stop_at:
        runner.register_hook(Interrupt(stop_at))
        with pytest.raises(RuntimeError, match='interrupted'):
            runner.train()
        return None
    return runner.train()


def _stopped_twice(cfg: Config, work_dir: str, kills: List[int]) -> torch.nn.Module:
    for n, at in enumerate(kills):
        _train(cfg, work_dir, stop_at=at, resume=n > 0)
    return _train(cfg, work_dir, resume=True)


def _workers(cfg: Config, num_workers: int) -> None:
    cfg.train_dataloader.num_workers = num_workers
    cfg.train_dataloader.persistent_workers = num_workers > 0  # torch refuses it without workers


def _no_evaluation(cfg: Config) -> None:
    for stage in ('val', 'test'):
        cfg.update({f'{stage}_dataloader': None, f'{stage}_cfg': None, f'{stage}_evaluator': None})
    cfg.log_level = 'WARNING'


@pytest.fixture(scope='module')
def references() -> Dict[str, Dict[str, torch.Tensor]]:
    """The uninterrupted runs' weights, made once: with seeded augmentation they are the same
    whatever the number of workers, so each test's resumed runs with 0, 1 and 2 workers are
    compared with one run without workers."""
    return {}


def _detection_cfg(data_root: str) -> Config:
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.merge_from_dict(dict(o.split('=', 1) for o in data_options(data_root)))
    cfg.merge_from_dict(
        {
            'train_dataloader.dataset.pipeline.3.prob': 0.5,  # random flips
            'model.train_cfg.rpn.sampler.num': 64,  # random RPN and RoI sampling
            'model.train_cfg.rcnn.sampler.num': 32,
            'train_cfg.max_epochs': 3,
            'param_scheduler.1.end': 3,
            'default_hooks.checkpoint.by_epoch': False,
            'default_hooks.checkpoint.interval': 5,
        }
    )
    _no_evaluation(cfg)
    return cfg


def _segmentation_cfg(data_root: str) -> Config:
    cfg = Config.fromfile(TINY_SEG_CONFIG)
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.train_cfg.max_iters = 12
    cfg.param_scheduler[1].end = 12
    cfg.default_hooks.checkpoint.interval = 2
    _no_evaluation(cfg)
    assert cfg.train_dataloader.sampler.type == 'InfiniteSampler'
    return cfg


def _reference(references: dict, name: str, cfg: Config, work_dir: str) -> dict:
    if name not in references:
        _workers(cfg, 0)
        references[name] = _weights(_train(cfg, work_dir))
    return references[name]


@pytest.mark.slow
@pytest.mark.parametrize('num_workers', [0, 1, 2])
def test_epoch_loop_resumes_in_epochs_2_and_3(
    tmp_path, tiny_shapes: str, references: dict, num_workers: int
) -> None:
    """12 iterations an epoch, 3 epochs, a checkpoint every 5 iterations: stopped after
    iteration 17 (resumed from iter_15, batch 3 of epoch 2) and 32 (iter_30, batch 6 of 3)."""
    reference = _reference(references, 'epochs', _detection_cfg(tiny_shapes), str(tmp_path / 'r'))
    cfg = _detection_cfg(tiny_shapes)
    _workers(cfg, num_workers)
    resumed = _weights(_stopped_twice(cfg, str(tmp_path / 'work'), [17, 32]))
    differing = _differing(resumed, reference)
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:3]}'


@pytest.mark.slow
@pytest.mark.parametrize('num_workers', [0, 1, 2])
def test_iteration_loop_resumes_in_passes_2_and_3(
    tmp_path, seg_shapes: str, references: dict, num_workers: int
) -> None:
    """mmseg's InfiniteSampler, 4 batches a pass, 12 iterations, a checkpoint every 2: stopped
    after iteration 7 (resumed from iter_6, in pass 2) and 11 (iter_10, in pass 3)."""
    pytest.importorskip('mmseg')
    reference = _reference(references, 'iters', _segmentation_cfg(seg_shapes), str(tmp_path / 'r'))
    cfg = _segmentation_cfg(seg_shapes)
    _workers(cfg, num_workers)
    resumed = _weights(_stopped_twice(cfg, str(tmp_path / 'work'), [7, 11]))
    differing = _differing(resumed, reference)
    assert not differing, f'{len(differing)} tensors differ, e.g. {differing[:3]}'
