"""Checkpoints that survive a crash at any moment, resume exactly, and are written on SIGTERM.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest checkpoint before it writes the new one,
and writes both the checkpoint and ``last_checkpoint`` in place: with ``max_keep_ckpts=1``, a crash
during a save leaves no intact checkpoint, and a crash while ``last_checkpoint`` is rewritten
leaves ``--resume`` nothing to follow. :class:`FaultTolerantCheckpointHook` keeps its options and
file names and changes how it writes:

1. **Atomic saves.** The checkpoint is written to a temporary file in the same directory,
   flushed to disk (``fsync``) and renamed into place; the directory is synced; then
   ``last_checkpoint`` is replaced the same way; only then are checkpoints beyond
   ``max_keep_ckpts`` removed. At every moment the work dir holds at least one complete
   checkpoint and ``last_checkpoint`` names a complete one (a rename is atomic on POSIX file
   systems; a temporary file left by a crash is removed at the next start).
2. **Random states.** Each checkpoint carries, for every process, the random states and sampler
   settings that :class:`~mmfish.engine.runner.ResumableEpochBasedTrainLoop` and
   :class:`~mmfish.engine.runner.ResumableIterBasedTrainLoop` need to resume on the uninterrupted
   run's random path (key ``resume_state``).
3. **Preemption.** On SIGTERM (what Slurm and most schedulers send before killing a job) training
   finishes the current iteration, writes ``iter_<n>.pth`` (with the states above), and exits
   with status :data:`PREEMPTED_EXIT_CODE` (75); ``tools/train.py --resume`` continues from it.
   In a distributed run the processes agree, after each iteration, on whether any of them was
   signalled, so that all stop after the same iteration.

Remote storage back-ends (``backend_args`` other than local files) fall back to mmengine's
writing; ``save_best`` checkpoints are written by mmengine as before (not atomically).
"""

import glob
import os
import os.path as osp
import signal
import threading
from collections import deque
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from mmfish.registry import register_hook
from mmfish.utils.io import TMP_MARK, replace_durably, temporary_path, write_text_atomically
from mmfish.utils.mim import tool_command

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "temporary failure, try again"
RESUME_STATE_KEY = 'resume_state'


class TrainingPreempted(SystemExit):
    """Raised after the checkpoint written on SIGTERM: exits with :data:`PREEMPTED_EXIT_CODE`."""

    def __init__(self) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)


@register_hook
class FaultTolerantCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic saves, random states for exact resume, and SIGTERM saves.

    Takes ``CheckpointHook``'s arguments (``interval``, ``by_epoch``, ``max_keep_ckpts``, ...)
    plus ``save_on_sigterm``. In a config::

        default_hooks = dict(checkpoint=dict(type='FaultTolerantCheckpointHook', interval=1))

    Args:
        save_on_sigterm: Install the SIGTERM handler (checkpoint and exit with status 75 after
            the current iteration). Defaults to True.
        **kwargs: ``CheckpointHook`` arguments.
    """

    def __init__(self, save_on_sigterm: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_on_sigterm = save_on_sigterm
        self._sigterm_received = False
        self._previous_handler: Any = None
        self._gathered_states: Optional[List[Dict[str, Any]]] = None

    # ---------------------------------------------------------------------------- run lifecycle
    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.max_keep_ckpts > 0:
            # mmengine's deque has maxlen=max_keep_ckpts and drops ids on append, before the new
            # file exists; this hook removes old checkpoints itself, after the new one is durable.
            self.keep_ckpt_ids = deque(self.keep_ckpt_ids)
        self._atomic = isinstance(self.file_backend, LocalBackend)
        if not self._atomic:
            runner.logger.warning(
                'FaultTolerantCheckpointHook writes atomically only to local files; '
                f'{self.out_dir} is written by mmengine as is'
            )
        if self._atomic and is_main_process():
            for stale in glob.glob(osp.join(self.out_dir, f'{TMP_MARK}*')):
                os.remove(stale)  # the unfinished write of a run that was killed
        loop = runner.train_loop
        if not hasattr(loop, 'set_train_state'):
            runner.logger.warning(
                f'{type(loop).__name__} does not restore random states: resumed runs will not '
                "follow the uninterrupted run's random path (use ResumableEpochBasedTrainLoop or "
                'ResumableIterBasedTrainLoop)'
            )
        if self.save_on_sigterm and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def after_train(self, runner) -> None:
        super().after_train(runner)
        if self.save_on_sigterm and self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm_received = True

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        if self.save_on_sigterm and self._any_process_signalled():
            self._save_on_preemption(runner)

    def _any_process_signalled(self) -> bool:
        if get_world_size() == 1:
            return self._sigterm_received
        device = 'cuda' if torch_dist.get_backend() == 'nccl' else 'cpu'
        flag = torch.tensor([int(self._sigterm_received)], device=device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return bool(flag.item())

    def _save_on_preemption(self, runner) -> None:
        step = runner.iter + 1
        if self.by_epoch or not self.every_n_train_iters(runner, self.interval, self.save_begin):
            filename = f'iter_{step}.pth'  # not counted in max_keep_ckpts; removed later
            runner.message_hub.update_info('preemption_ckpt', filename)
            self._write(runner, filename, meta=dict(epoch=runner.epoch, iter=step), by_epoch=False)
        # else: after_train_iter has just saved this iteration
        runner.logger.warning(
            f'SIGTERM received: checkpoint of iteration {step} saved in {self.out_dir}; exiting '
            f'with status {PREEMPTED_EXIT_CODE}. Continue with {tool_command("train.py")} ... '
            '--resume'
        )
        raise TrainingPreempted()

    # ------------------------------------------------------------------------- checkpoint state
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        loop = runner.train_loop
        if not hasattr(loop, 'get_train_state'):
            return
        states = self._gathered_states or [loop.get_train_state()]
        meta = checkpoint['meta']
        batches_done = meta['iter'] - meta['epoch'] * len(loop.dataloader)
        # a DataLoader given a batch_sampler (mmdet's AspectRatioBatchSampler) has batch_size None
        batch_size = loop.dataloader.batch_size or loop.dataloader.batch_sampler.batch_size
        checkpoint[RESUME_STATE_KEY] = dict(
            processes=states,
            epoch=meta['epoch'],
            batches_done=batches_done,
            samples_done=batches_done * batch_size * len(states),
        )

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        loop = getattr(runner, '_train_loop', None)  # not the property: it would build the loop
        if not hasattr(loop, 'set_train_state'):
            return  # testing, or a loop that cannot use the states
        resume_state = checkpoint.get(RESUME_STATE_KEY)
        if resume_state is None:
            loop.set_train_state(None)
            return
        states = resume_state['processes']
        if len(states) != get_world_size():
            runner.logger.warning(
                f'The checkpoint holds the random states of {len(states)} processes, this run has '
                f'{get_world_size()}: they are not restored, the random path will differ.'
            )
            loop.set_train_state(None)
            return
        loop.set_train_state(states[get_rank()])

    # ---------------------------------------------------------------------------------- writing
    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        if not self._atomic:
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        removable: List[int] = []
        if self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids or self.keep_ckpt_ids[-1] != step):
            self.keep_ckpt_ids.append(step)
            while len(self.keep_ckpt_ids) > self.max_keep_ckpts:
                removable.append(self.keep_ckpt_ids.popleft())
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        preemption_ckpt = runner.message_hub.get_info('preemption_ckpt')
        runner.message_hub.update_info('preemption_ckpt', None)

        self._write(runner, self.filename_tmpl.format(step), meta, self.by_epoch)

        if is_main_process():  # the new checkpoint is durable: older ones may go
            old = [self.filename_tmpl.format(s) for s in removable]
            for name in old + ([preemption_ckpt] if preemption_ckpt else []):
                path = osp.join(self.out_dir, name)
                if osp.isfile(path) and path != self.last_ckpt:
                    os.remove(path)

    def _write(self, runner, filename: str, meta: dict, by_epoch: bool) -> None:
        """Write ``filename`` atomically, then point ``last_checkpoint`` at it (all processes)."""
        loop = runner.train_loop
        if hasattr(loop, 'get_train_state'):
            self._gathered_states = all_gather_object(loop.get_train_state())
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        tmp_path = temporary_path(self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir,
                osp.basename(tmp_path),
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=by_epoch,
                backend_args=self.backend_args,
                **self.args,
            )
        finally:
            self._gathered_states = None
        if not is_main_process():
            return
        replace_durably(tmp_path, self.last_ckpt)
        write_text_atomically(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
