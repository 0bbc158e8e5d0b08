"""Training loops that a checkpoint can stop and restart exactly, by epochs and by iterations.

mmengine's ``EpochBasedTrainLoop`` resumes at the start of the epoch after the checkpoint's, and
its ``IterBasedTrainLoop`` at the batch after the checkpoint's, both with freshly seeded random
generators. :class:`ResumableEpochBasedTrainLoop` (detection configs) and
:class:`ResumableIterBasedTrainLoop` (segmentation configs) continue instead from the very batch
after the checkpoint, with the random states the uninterrupted run had there, so the resumed run
computes exactly what the uninterrupted one would have. What it takes:

- **Random states.** The states of Python's, numpy's and torch's generators at the checkpoint
  (saved by :class:`~mmfish.engine.hooks.FaultTolerantCheckpointHook`, one set per process) are
  restored just before the first batch after the checkpoint is loaded.
- **Seeded augmentation** (``seeded_augmentation=True``, the default). The training data loader
  is replaced by its keyed version (:func:`mmfish.datasets.keyed.keyed_dataloader`): each sample
  is loaded with Python's, numpy's and torch's generators seeded from (seed, epoch, index), in
  whichever process loads it, and the loader's iterators take their workers' seeds from a
  generator of their own, so data loading draws nothing from the main process's generators.
  Augmentation is then the same whatever the number of workers, whether they persist, and where
  the run resumed.
- **Position in the data.** A checkpoint written in the middle of an epoch (on SIGTERM, or by
  iteration) restarts that epoch's data loader and skips, without loading them, the batches
  already trained on: the sampler gives the same order (it shuffles with ``seed + epoch``). The
  iteration-based loop records where its data loader is (the pass over the data, the batches
  taken from it) and does the same for that pass; with an ``InfiniteSampler`` (mmseg's configs)
  the one pass is the whole run, so a resume draws every index since the start again (no sample
  is loaded). With ``seeded_augmentation=False`` the batches already trained on are loaded and
  dropped instead, so that data-loading workers started afresh draw the same augmentations as
  before, and the iterators' seeds come from torch's global generator: at an epoch's start the
  states are restored before the iterator is created, in the middle of an epoch after the
  batches already trained on are loaded again.
- **Bad samples** (``max_bad_samples``, default 0.1% of the dataset, at least 1;
  ``skip_self_intersecting``, default False). A sample that cannot be loaded or used is skipped
  by the keyed dataset, another drawn in its place; the loop counts the skipped files
  (:class:`~mmfish.datasets.bad_samples.BadSamples`, in the checkpoints too), writes
  ``bad_samples.json`` to the work dir, and stops, after a checkpoint of the last iteration done,
  with :class:`~mmfish.datasets.bad_samples.TooManyBadSamples` (one line naming the files) when a
  new bad file is one more than the bound allows.
- **First iterator.** The iteration-based loop creates its first iterator when it is built, as
  mmengine's does, but for data-loading workers, which would take the sampler's first indices
  and their seeds at once: then at its first batch, after a resumed run has set the checkpoint's
  seeds.
- **Validation aside.** Validation runs with the training's random states put aside and restored
  after (:func:`~mmfish.engine.runner.random_state.preserved_rng_states`), so that it changes
  nothing for the training that follows.

Exactness needs the same machine type, number of processes, batch size and data, and
deterministic algorithms (``randomness=dict(deterministic=True)``). With
``seeded_augmentation=False`` it needs data-loading workers that are started afresh at each epoch
too: persistent workers carry their random states across epochs (passes over the data), where no
checkpoint can reach them, and a run resumed after the first epoch then draws other augmentations
(a warning says so).
"""

import functools
import os.path as osp
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_rank, get_world_size
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.utils import calc_dynamic_intervals
from torch.utils.data import DataLoader

from mmfish.datasets.bad_samples import REPORT_NAME, BadSamples, default_bound
from mmfish.datasets.keyed import is_keyed, keyed_dataloader
from mmfish.registry import register_loop

from .random_state import RngStates, get_rng_states, preserved_rng_states, set_rng_states

TRAIN_STATE_VERSION = 1


class _ResumableLoop:
    """What both loops share: their random states in checkpoints, their checks on resuming, and
    validation that leaves the training's random states as they were."""

    runner: Any
    dataloader: DataLoader
    _resume_state: Optional[Dict[str, Any]] = None
    _rng_to_restore: Optional[RngStates] = None
    _validation_rng: Optional[RngStates] = None
    bad_samples: Optional[BadSamples] = None
    _batch_untrained = False

    # ---------------------------------------------------------------------------- keyed samples
    def _key_samples(
        self,
        seeded_augmentation: bool,
        max_bad_samples: Optional[int],
        skip_self_intersecting: bool,
    ) -> None:
        """Replace the data loader by its keyed version (:mod:`mmfish.datasets.keyed`)."""
        if not isinstance(seeded_augmentation, bool):
            raise ValueError(
                f'train_cfg.seeded_augmentation must be True or False, got {seeded_augmentation!r}'
            )
        self.seeded_augmentation = seeded_augmentation
        sampler = getattr(self.dataloader.batch_sampler, 'sampler', self.dataloader.sampler)
        seed = getattr(sampler, 'seed', None)
        if seed is None:
            seed = getattr(self.runner, 'seed', None) or 0
        self.dataloader = keyed_dataloader(
            self.dataloader,
            seeded=seeded_augmentation,
            default_seed=seed,
            skip_self_intersecting=skip_self_intersecting,
        )
        size = len(self.dataloader.dataset)
        bound = default_bound(size) if max_bad_samples is None else max_bad_samples
        name = REPORT_NAME if get_world_size() == 1 else f'rank{get_rank()}_{REPORT_NAME}'
        work_dir = getattr(self.runner, 'work_dir', None)
        self.bad_samples = BadSamples(osp.join(work_dir, name) if work_dir else None, bound)

    @property
    def _skips_batches(self) -> bool:
        """Whether a resume skips the batches already trained on without loading them: their
        augmentations are a function of their keys, and loading them draws nothing that matters.
        """
        return is_keyed(self.dataloader) and self.seeded_augmentation

    def _taken(self, items: Iterable[Any]) -> Iterator[Any]:
        """The batches of a keyed data loader; their skipped samples recorded (may stop)."""
        for item in items:
            yield self._take(item)

    def _take(self, item: Any) -> Any:
        if not is_keyed(self.dataloader):
            return item
        batch, skipped = item
        new_files = 0
        if skipped:
            new_files = self.bad_samples.add(skipped)
            for record in skipped:
                self.runner.logger.warning(
                    f'Skipped a bad training sample, {record.file}: {record.error} (another '
                    f'sample was loaded in its place; report: {self.bad_samples.report_path})'
                )
        # a new bad file beyond the bound stops the run (files met before, repaired or not, do not)
        if self._any_process(bool(new_files) and self.bad_samples.over_bound):
            self._stop_for_bad_samples()
        return batch

    @staticmethod
    def _any_process(flag: bool) -> bool:
        if get_world_size() == 1:
            return flag
        device = 'cuda' if torch_dist.get_backend() == 'nccl' else 'cpu'
        value = torch.tensor([int(flag)], device=device)
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MAX)
        return bool(value.item())

    def _stop_for_bad_samples(self) -> None:
        """Write a checkpoint of the last iteration done and stop with the files named."""
        runner = self.runner
        self._batch_untrained = True  # the batch just taken is not trained on
        self.bad_samples.write_report()
        hook = next((h for h in runner.hooks if hasattr(h, '_write')), None)
        checkpoint = None
        if hook is not None:  # FaultTolerantCheckpointHook: atomic, with the random states
            name = f'iter_{runner.iter}.pth'
            if not osp.isfile(osp.join(hook.out_dir, name)):  # else: saved by its interval
                runner.message_hub.update_info('preemption_ckpt', name)  # removed later
            meta = dict(epoch=runner.epoch, iter=runner.iter)
            hook._write(runner, name, meta=meta, by_epoch=False)
            checkpoint = osp.join(hook.out_dir, name)
        raise self.bad_samples.error(checkpoint)

    def _sampler(self) -> Any:
        """The index sampler (a keyed loader's, or mmdet's batch sampler's, not DataLoader's)."""
        batch_sampler = getattr(self.dataloader, 'batch_sampler', None)
        return getattr(batch_sampler, 'sampler', None) or self.dataloader.sampler

    # --------------------------------------------------------------------------- checkpoint state
    def get_train_state(self) -> Dict[str, Any]:
        """This process's random states and sampler settings, for a checkpoint.

        During validation these are the training's states, put aside before validation began
        (a checkpoint written after an evaluation, e.g. of the best model, resumes training).
        """
        sampler = self._sampler()
        rng = self._validation_rng if self._validation_rng is not None else get_rng_states()
        state = dict(
            version=TRAIN_STATE_VERSION,
            rng=rng,
            seed=self.runner.seed,
            sampler=dict(
                type=type(sampler).__name__,
                seed=getattr(sampler, 'seed', None),
                shuffle=getattr(sampler, 'shuffle', None),
            ),
            batch_size=self.dataloader.batch_size,
        )
        if self.bad_samples is not None:
            state['bad_samples'] = self.bad_samples.state_dict()
        return state

    def set_train_state(self, state: Optional[Dict[str, Any]]) -> None:
        """Take a checkpoint's state for this process; it is applied when training resumes.

        ``None`` (a checkpoint without random states) lets the run continue with freshly seeded
        generators, with a warning.
        """
        self._resume_state = state

    # ------------------------------------------------------------------------------- resuming
    def _restore_rng_states(self) -> None:
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def _validate(self) -> None:
        with preserved_rng_states() as training_rng:
            self._validation_rng = training_rng
            try:
                self.runner.val_loop.run()
            finally:
                self._validation_rng = None

    def _prepare_resume(self, data_epoch: int) -> Optional[Dict[str, Any]]:
        """Check a resumed checkpoint's state against this run and queue its random states.

        Args:
            data_epoch: The pass over the training data that the resumed run continues.

        Returns:
            The state, or None for a checkpoint without one (with a warning).
        """
        state, self._resume_state = self._resume_state, None
        logger = self.runner.logger
        if state is None or state.get('version') != TRAIN_STATE_VERSION:
            logger.warning(
                "The resumed checkpoint holds no random states (written by mmengine's "
                'CheckpointHook or an older mmfish): training continues from its weights, '
                'optimizer and schedule, but augmentation and sampling draw other random numbers '
                'than an uninterrupted run would (same data order; a different random path).'
            )
            return None
        sampler = self._sampler()
        saved_seed = state['sampler']['seed']
        if saved_seed is not None and getattr(sampler, 'seed', saved_seed) != saved_seed:
            logger.warning(
                f"The train sampler seed is {sampler.seed}, the checkpoint's {saved_seed}: "
                "using the checkpoint's, to keep the data order of the interrupted run."
            )
            sampler.seed = saved_seed
        init_fn = self.dataloader.worker_init_fn
        if isinstance(init_fn, functools.partial) and init_fn.keywords.get('seed') not in (
            None,
            state['seed'],
        ):
            self.dataloader.worker_init_fn = functools.partial(
                init_fn.func, *init_fn.args, **{**init_fn.keywords, 'seed': state['seed']}
            )
        if state['batch_size'] != self.dataloader.batch_size:
            logger.warning(
                f'The checkpoint was written with batch size {state["batch_size"]}, this run uses '
                f'{self.dataloader.batch_size}: the resumed run cannot follow the same path.'
            )
        persistent = self.dataloader.num_workers > 0 and self.dataloader.persistent_workers
        if persistent and data_epoch > 0 and not self._skips_batches:
            logger.warning(
                'Resuming with persistent data-loading workers after the first epoch and '
                "train_cfg.seeded_augmentation=False: the workers' random states (augmentation) "
                'are not in the checkpoint, so augmentations will differ from an uninterrupted '
                'run. seeded_augmentation=True (the default) or persistent_workers=False makes '
                'the resumed run exact.'
            )
        if self.bad_samples is not None:
            self.bad_samples.load_state_dict(state.get('bad_samples'))
        self._rng_to_restore = state['rng']
        return state


@register_loop
class ResumableEpochBasedTrainLoop(_ResumableLoop, EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes mid-epoch on the uninterrupted run's random path.

    Takes ``EpochBasedTrainLoop``'s arguments (``max_epochs``, ``val_begin``, ``val_interval``,
    ``dynamic_intervals``) and ``seeded_augmentation`` and ``max_bad_samples`` (the module's
    docstring). Configs select it with
    ``train_cfg = dict(type='ResumableEpochBasedTrainLoop', ...)``;
    :class:`~mmfish.engine.hooks.FaultTolerantCheckpointHook` writes and reads the state it needs
    (:meth:`get_train_state`, :meth:`set_train_state`).
    """

    def __init__(
        self,
        runner,
        dataloader: Union[DataLoader, Dict],
        max_epochs: int,
        val_begin: int = 1,
        val_interval: int = 1,
        dynamic_intervals: Optional[List[Tuple[int, int]]] = None,
        seeded_augmentation: bool = True,
        max_bad_samples: Optional[int] = None,
        skip_self_intersecting: bool = False,
    ) -> None:
        super().__init__(runner, dataloader, max_epochs, val_begin, val_interval, dynamic_intervals)
        self._key_samples(seeded_augmentation, max_bad_samples, skip_self_intersecting)

    def run(self) -> torch.nn.Module:
        """Train from the current epoch and iteration to ``max_epochs``."""
        self.runner.call_hook('before_train')
        if self._iter > 0:
            self._prepare_resume(self._epoch)
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if (
                self.runner.val_loop is not None
                and self._epoch >= self.val_begin
                and (self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs)
            ):
                self._validate()
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self) -> None:
        """Train one epoch, from the batch after the checkpoint's when resuming mid-epoch."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._iter - self._epoch * len(self.dataloader)
        if done == 0:
            self._restore_rng_states()  # before creating the iterator draws a seed
        batches = self._batches_after(done)
        self._restore_rng_states()  # after the batches loaded again drew theirs
        for idx, data_batch in enumerate(self._taken(batches), start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def _batches_after(self, done: int) -> Iterator[Any]:
        """The epoch's batches after the first ``done``: skipped unloaded (seeded augmentation),
        or loaded and dropped."""
        if done >= len(self.dataloader):
            return iter(())  # the checkpoint ended the epoch: only its end-of-epoch hooks are due
        if done and self._skips_batches:
            self.runner.logger.info(
                f'Resuming in the middle of epoch {self._epoch + 1}: skipping the {done} batches '
                'already trained on without loading them (their augmentations are seeded by '
                'sample), to continue with the same data and augmentations'
            )
            return _iterator_skipping(self.dataloader, done)
        batches = iter(self.dataloader)
        if done:
            self.runner.logger.info(
                f'Resuming in the middle of epoch {self._epoch + 1}: loading the {done} batches '
                'already trained on, to continue with the same data and augmentations'
            )
            for _ in range(done):
                self._take(next(batches))
        return batches


def _set_sampler_epoch(dataloader: DataLoader, epoch: int) -> None:
    """``set_epoch`` on the data loader's sampler, where it has one (as mmengine's loop does)."""
    for sampler in (
        getattr(dataloader, 'sampler', None),
        getattr(getattr(dataloader, 'batch_sampler', None), 'sampler', None),
    ):
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
            return


def _iterator_skipping(dataloader: DataLoader, skip: int) -> Iterator[Any]:
    """A keyed data loader's iterator that leaves out the first ``skip`` batches unloaded."""
    dataloader.batch_sampler.skip_batches = skip
    try:
        return iter(dataloader)
    finally:
        dataloader.batch_sampler.skip_batches = 0


class _Batches:
    """The training batches, pass after pass over the data, and where they are.

    mmengine's ``_InfiniteDataloaderIterator`` (a new data loader iterator, with the sampler's
    epoch advanced, whenever one pass ends) plus: the first iterator is created by :meth:`start`
    or at the first batch, and the position is kept (:attr:`epoch`, the pass; :attr:`batches`,
    the batches taken in it).
    """

    def __init__(self, dataloader: DataLoader, epoch: int = 0) -> None:
        self.dataloader = dataloader
        self.epoch = epoch
        self.batches = 0
        self._iterator: Optional[Iterator[Any]] = None
        if epoch > 0:
            _set_sampler_epoch(dataloader, epoch)

    def __iter__(self) -> '_Batches':
        return self

    def start(self, skip: int = 0) -> None:
        """Create the data loader iterator of this pass now (it draws a seed from torch's).

        Args:
            skip: Batches of the pass to leave out unloaded (a keyed data loader's).
        """
        self._iterator = (
            _iterator_skipping(self.dataloader, skip) if skip else iter(self.dataloader)
        )
        self.batches = skip

    def __next__(self) -> Any:
        if self._iterator is None:
            self.start()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self.batches = 0
            _set_sampler_epoch(self.dataloader, self.epoch)
            if self.dataloader.num_workers > 0:
                time.sleep(2)  # mmengine's pause against a deadlock of workers between passes
            self._iterator = iter(self.dataloader)
            batch = next(self._iterator)
        self.batches += 1
        return batch


@register_loop
class ResumableIterBasedTrainLoop(_ResumableLoop, IterBasedTrainLoop):
    """``IterBasedTrainLoop`` that resumes on the uninterrupted run's data and random path.

    Takes ``IterBasedTrainLoop``'s arguments (``max_iters``, ``val_begin``, ``val_interval``,
    ``dynamic_intervals``) and ``seeded_augmentation`` and ``max_bad_samples`` (the module's
    docstring). Configs select it with
    ``train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=...)``;
    :class:`~mmfish.engine.hooks.FaultTolerantCheckpointHook` writes and reads the state it needs
    (:meth:`get_train_state`, :meth:`set_train_state`).
    """

    def __init__(
        self,
        runner,
        dataloader: Union[DataLoader, Dict],
        max_iters: int,
        val_begin: int = 1,
        val_interval: int = 1000,
        dynamic_intervals: Optional[List[Tuple[int, int]]] = None,
        seeded_augmentation: bool = True,
        max_bad_samples: Optional[int] = None,
        skip_self_intersecting: bool = False,
    ) -> None:
        # IterBasedTrainLoop.__init__ (mmengine 0.10.7) but for its data iterator, which it
        # creates at once: one with workers would take indices from an InfiniteSampler, and seed
        # its workers, before a resumed run could set the checkpoint's seeds (and, replaced,
        # would close the sampler's index stream, which all its iterators share).
        BaseLoop.__init__(self, runner, dataloader)
        self._max_iters = int(max_iters)
        if self._max_iters != max_iters:
            raise ValueError(f'max_iters must be an integer, got {max_iters!r}')
        self._max_epochs = 1
        self._epoch = 0
        self._iter = 0
        self.val_begin = val_begin
        self.val_interval = val_interval
        self.stop_training = False  # set by EarlyStoppingHook
        if hasattr(self.dataloader.dataset, 'metainfo'):
            self.runner.visualizer.dataset_meta = self.dataloader.dataset.metainfo
        self.dynamic_milestones, self.dynamic_intervals = calc_dynamic_intervals(
            self.val_interval, dynamic_intervals
        )
        self._key_samples(seeded_augmentation, max_bad_samples, skip_self_intersecting)
        self.dataloader_iterator = _Batches(self.dataloader)
        if self.dataloader.num_workers == 0:
            self.dataloader_iterator.start()  # now, as mmengine's loop: the same random draws

    def get_train_state(self) -> Dict[str, Any]:
        """:meth:`_ResumableLoop.get_train_state` plus the data loader's position (``data``)."""
        state = super().get_train_state()
        batches = self.dataloader_iterator
        # a stop for bad samples saves before training on the batch it has taken
        taken = batches.batches - (1 if self._batch_untrained else 0)
        state['data'] = dict(epoch=batches.epoch, batches=taken)
        return state

    def run(self) -> torch.nn.Module:
        """Train from the current iteration to ``max_iters``."""
        self.runner.call_hook('before_train')
        # the whole run is one epoch for the hooks, as in IterBasedTrainLoop
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            self._resume_data()
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            data_batch = self._take(next(self.dataloader_iterator))
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (
                self.runner.val_loop is not None
                and self._iter >= self.val_begin
                and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)
            ):
                self._validate()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

    def _resume_data(self) -> None:
        """Put the data loader where the checkpoint's was, then restore the random states."""
        position = self._resume_state and self._resume_state.get('data')
        epoch, done = (position['epoch'], position['batches']) if position else (0, self._iter)
        self._prepare_resume(epoch)  # before the first iterator: it may correct the seeds
        self.dataloader_iterator = _Batches(self.dataloader, epoch)
        if self._skips_batches:
            self.dataloader_iterator.start(skip=done)
            self.runner.logger.info(
                f'Resuming at iteration {self._iter}: skipping the {done} batches already taken '
                'from the data loader (in its current pass over the data) without loading them '
                '(their augmentations are seeded by sample), to continue with the same data and '
                'augmentations'
            )
        else:
            self.runner.logger.info(
                f'Resuming at iteration {self._iter}: loading the {done} batches already taken '
                'from the data loader (in its current pass over the data), to continue with the '
                'same data and augmentations'
            )
            for _ in range(done):
                self._take(next(self.dataloader_iterator))
        self._restore_rng_states()  # after the batches loaded again drew theirs
