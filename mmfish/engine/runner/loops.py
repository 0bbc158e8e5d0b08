"""An epoch-based training loop that a checkpoint can stop and restart exactly.

mmengine's ``EpochBasedTrainLoop`` resumes at the start of the epoch after the checkpoint's and
with freshly seeded random generators. :class:`ResumableEpochBasedTrainLoop` continues instead
from the very batch after the checkpoint, with the random states the uninterrupted run had there,
so the resumed run computes exactly what the uninterrupted one would have. What it takes:

- **Random states.** The states of Python's, numpy's and torch's generators at the checkpoint
  (saved by :class:`~mmfish.engine.hooks.FaultTolerantCheckpointHook`, one set per process) are
  restored just before the first batch after the checkpoint is loaded.
- **Position in the epoch.** A checkpoint written in the middle of an epoch (on SIGTERM, or by
  iteration) restarts that epoch's data loader and loads, without training on them, the batches
  already trained on: the sampler gives the same order (it shuffles with ``seed + epoch``), and
  data-loading workers, seeded afresh at each epoch, draw the same augmentations as before.
- **Every draw in its place.** Creating a data loader iterator draws a seed from torch's global
  generator: at an epoch's start the states are restored before the iterator is created (as the
  uninterrupted run had them there), in the middle of an epoch after the batches already trained
  on are loaded again. Validation runs with the training's random states put aside and restored
  after (:func:`~mmfish.engine.runner.random_state.preserved_rng_states`), so that it changes
  nothing for the training that follows.

Exactness needs the same machine type, number of processes, batch size and data, deterministic
algorithms (``randomness=dict(deterministic=True)``), and data-loading workers that are started
afresh at each epoch: persistent workers (``persistent_workers=True`` with ``num_workers > 0``)
carry their random states across epochs, where no checkpoint can reach them, and a run resumed
after the first epoch then draws other augmentations (a warning says so).
"""

import functools
from typing import Any, Dict, Iterator, Optional

import torch
from mmengine.runner import EpochBasedTrainLoop

from mmfish.registry import LOOPS

from .random_state import RngStates, get_rng_states, preserved_rng_states, set_rng_states

TRAIN_STATE_VERSION = 1


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes mid-epoch on the uninterrupted run's random path.

    Takes ``EpochBasedTrainLoop``'s arguments (``max_epochs``, ``val_begin``, ``val_interval``,
    ``dynamic_intervals``). Configs select it with
    ``train_cfg = dict(type='ResumableEpochBasedTrainLoop', ...)``;
    :class:`~mmfish.engine.hooks.FaultTolerantCheckpointHook` writes and reads the state it needs
    (:meth:`get_train_state`, :meth:`set_train_state`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_state: Optional[Dict[str, Any]] = None
        self._rng_to_restore: Optional[RngStates] = None
        self._validation_rng: Optional[RngStates] = None

    # --------------------------------------------------------------------------- checkpoint state
    def get_train_state(self) -> Dict[str, Any]:
        """This process's random states and sampler settings, for a checkpoint.

        During validation these are the training's states, put aside before validation began
        (a checkpoint written after an evaluation, e.g. of the best model, resumes training).
        """
        sampler = self.dataloader.sampler
        rng = self._validation_rng if self._validation_rng is not None else get_rng_states()
        return dict(
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

    def set_train_state(self, state: Optional[Dict[str, Any]]) -> None:
        """Take a checkpoint's state for this process; it is applied when training resumes.

        ``None`` (a checkpoint without random states) lets the run continue with freshly seeded
        generators, with a warning.
        """
        self._resume_state = state

    # --------------------------------------------------------------------------------- training
    def run(self) -> torch.nn.Module:
        """Train from the current epoch and iteration to ``max_epochs``."""
        self.runner.call_hook('before_train')
        if self._iter > 0:
            self._prepare_resume()
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if (
                self.runner.val_loop is not None
                and self._epoch >= self.val_begin
                and (self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs)
            ):
                with preserved_rng_states() as training_rng:
                    self._validation_rng = training_rng
                    try:
                        self.runner.val_loop.run()
                    finally:
                        self._validation_rng = None
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
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def _restore_rng_states(self) -> None:
        if self._rng_to_restore is not None:
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def _batches_after(self, done: int) -> Iterator[Any]:
        """The epoch's batches after the first ``done``, which are loaded and dropped."""
        if done >= len(self.dataloader):
            return iter(())  # the checkpoint ended the epoch: only its end-of-epoch hooks are due
        batches = iter(self.dataloader)
        if done:
            self.runner.logger.info(
                f'Resuming in the middle of epoch {self._epoch + 1}: loading the {done} batches '
                'already trained on, to continue with the same data and augmentations'
            )
            for _ in range(done):
                next(batches)
        return batches

    def _prepare_resume(self) -> None:
        """Check a resumed checkpoint's state against this run and queue its random states."""
        state, self._resume_state = self._resume_state, None
        logger = self.runner.logger
        if state is None or state.get('version') != TRAIN_STATE_VERSION:
            logger.warning(
                "The resumed checkpoint holds no random states (written by mmengine's "
                'CheckpointHook or an older mmfish): training continues from its weights, '
                'optimizer and schedule, but augmentation and sampling draw other random numbers '
                'than an uninterrupted run would (same data order; a different random path).'
            )
            return
        sampler = self.dataloader.sampler
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
        if self.dataloader.num_workers > 0 and self.dataloader.persistent_workers:
            if self._epoch > 0:
                logger.warning(
                    'Resuming with persistent data-loading workers after the first epoch: their '
                    'random states (augmentation) are not in the checkpoint, so augmentations will '
                    'differ from an uninterrupted run. persistent_workers=False makes the resumed '
                    'run exact.'
                )
        self._rng_to_restore = state['rng']
