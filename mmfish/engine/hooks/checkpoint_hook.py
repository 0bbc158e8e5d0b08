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

4. **Ctrl-C.** The first SIGINT does the same (the iteration finishes, ``iter_<n>.pth`` is
   written) and exits with status :data:`INTERRUPTED_EXIT_CODE` (130, the shell's status for a
   run ended by Ctrl-C); a second Ctrl-C aborts at once, without saving.
5. **Best checkpoints** (``save_best``) are written the same way: the new ``best_*.pth`` is
   complete on disk before the previous one is removed.
6. **A failed write** (a full disk, a quota, an I/O error) removes the partial temporary file,
   leaves the previous checkpoint and ``last_checkpoint`` as they were, and stops training with
   :class:`CheckpointWriteError` (``tools/train.py`` prints it as one line, exit status 1); in a
   distributed run every process stops.

Remote storage back-ends (``backend_args`` other than local files) fall back to mmengine's
writing.
"""

import glob
import os
import os.path as osp
import signal
import sys
import threading
from collections import deque
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from mmfish.registry import register_hook
from mmfish.utils.errors import TrainingStopped
from mmfish.utils.io import TMP_MARK, replace_durably, temporary_path, write_text_atomically
from mmfish.utils.mim import tool_command

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "temporary failure, try again"
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a run ended by Ctrl-C
RESUME_STATE_KEY = 'resume_state'
_SIGNAL_NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'Ctrl-C (SIGINT)'}


class TrainingPreempted(SystemExit):
    """Raised after the checkpoint written on SIGTERM: exits with :data:`PREEMPTED_EXIT_CODE`."""

    def __init__(self) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)


class TrainingInterrupted(SystemExit):
    """Raised after the checkpoint written on Ctrl-C: exits with :data:`INTERRUPTED_EXIT_CODE`."""

    def __init__(self) -> None:
        super().__init__(INTERRUPTED_EXIT_CODE)


class CheckpointWriteError(TrainingStopped, OSError):
    """A checkpoint could not be written (an ``OSError``); the previous one is intact."""


@register_hook
class FaultTolerantCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic saves, random states for exact resume, and SIGTERM saves.

    Takes ``CheckpointHook``'s arguments (``interval``, ``by_epoch``, ``max_keep_ckpts``,
    ``save_best``, ...) plus ``save_on_sigterm`` and ``save_on_sigint``. In a config::

        default_hooks = dict(checkpoint=dict(type='FaultTolerantCheckpointHook', interval=1))

    Args:
        save_on_sigterm: Install the SIGTERM handler (checkpoint and exit with status 75 after
            the current iteration). Defaults to True.
        save_on_sigint: Install the SIGINT handler (the first Ctrl-C: checkpoint and exit with
            status 130 after the current iteration; the second: abort at once). Defaults to True.
        **kwargs: ``CheckpointHook`` arguments.
    """

    def __init__(
        self, save_on_sigterm: bool = True, save_on_sigint: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.save_on_sigterm = save_on_sigterm
        self.save_on_sigint = save_on_sigint
        self._signal_received = 0  # the number of the signal to stop on, 0 for none
        self._previous_handlers: Dict[int, Any] = {}
        self._pid = os.getpid()
        self._loop_code: Any = None
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
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()  # data-loading workers forked later inherit the handlers
            # The training loop's code: a signal that arrives outside it (training ended with an
            # exception, which skips after_train) goes to the handler that was there before.
            self._loop_code = getattr(getattr(type(loop), 'run', None), '__code__', None)
            if self.save_on_sigterm:
                self._previous_handlers[signal.SIGTERM] = signal.signal(
                    signal.SIGTERM, self._on_stop_signal
                )
            if self.save_on_sigint:
                self._previous_handlers[signal.SIGINT] = signal.signal(
                    signal.SIGINT, self._on_stop_signal
                )

    def after_train(self, runner) -> None:
        super().after_train(runner)
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return  # a data-loading worker: the main process stops the run
        if not self._in_training(frame):
            self._pass_on(signum, frame)
            return
        if signum == signal.SIGINT:
            if self._signal_received == signal.SIGINT:
                # the second Ctrl-C: abort now (KeyboardInterrupt), without a checkpoint
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            if 'TORCHELASTIC_RUN_ID' in os.environ:  # torchrun passes a second one as SIGTERM
                again = 'Ctrl-C again makes torchrun stop the processes with SIGTERM (status 75)'
            else:
                again = 'Ctrl-C again aborts at once without saving'
            message = (
                '\nCtrl-C: finishing this iteration, then saving a checkpoint and exiting '
                f'(status {INTERRUPTED_EXIT_CODE}); {again}\n'
            )
            try:  # unbuffered: the handler may run inside a write to sys.stderr
                if get_rank() == 0:
                    os.write(sys.stderr.fileno(), message.encode())
            except (OSError, ValueError):
                pass
        # SIGTERM wins over SIGINT: the scheduler has to see a preemption as one
        self._signal_received = max(self._signal_received, int(signum))

    def _in_training(self, frame: Any) -> bool:
        """Whether the training loop is running in the frame a signal interrupted."""
        if self._loop_code is None:
            return True
        while frame is not None:
            if frame.f_code is self._loop_code:
                return True
            frame = frame.f_back
        return False

    def _pass_on(self, signum: int, frame: Any) -> None:
        """Put the handlers back as they were and give them the signal."""
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self._restore_handlers()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        if self.save_on_sigterm or self.save_on_sigint:
            signum = self._any_process_signalled()
            if signum:
                self._save_on_signal(runner, signum)

    def _any_process_signalled(self) -> int:
        """The stop signal received by any process (SIGTERM before SIGINT), 0 for none."""
        if get_world_size() == 1:
            return self._signal_received
        device = 'cuda' if torch_dist.get_backend() == 'nccl' else 'cpu'
        flag = torch.tensor([self._signal_received], device=device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        return int(flag.item())

    def _save_on_signal(self, runner, signum: int) -> None:
        step = runner.iter + 1
        if self.by_epoch or not self.every_n_train_iters(runner, self.interval, self.save_begin):
            filename = f'iter_{step}.pth'  # not counted in max_keep_ckpts; removed later
            runner.message_hub.update_info('preemption_ckpt', filename)
            self._write(runner, filename, meta=dict(epoch=runner.epoch, iter=step), by_epoch=False)
        # else: after_train_iter has just saved this iteration
        code = PREEMPTED_EXIT_CODE if signum == signal.SIGTERM else INTERRUPTED_EXIT_CODE
        runner.logger.warning(
            f'{_SIGNAL_NAMES.get(signum, signum)} received: checkpoint of iteration {step} saved '
            f'in {self.out_dir}; exiting with status {code}. Continue with '
            f'{tool_command("train.py")} ... --resume'
        )
        self._restore_handlers()
        raise TrainingPreempted() if signum == signal.SIGTERM else TrainingInterrupted()

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
        previous = self.last_ckpt
        previous_info = runner.message_hub.get_info('last_ckpt')
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)  # saved in the checkpoint
        try:
            self._write_file(
                runner,
                filename,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=by_epoch,
                last_checkpoint=True,
                previous=previous,
                **self.args,
            )
        except CheckpointWriteError:
            self.last_ckpt = previous
            runner.message_hub.update_info('last_ckpt', previous_info)
            raise
        finally:
            self._gathered_states = None

    def _write_file(
        self,
        runner,
        filename: str,
        last_checkpoint: bool = False,
        previous: Optional[str] = None,
        **save_kwargs: Any,
    ) -> None:
        """Write the checkpoint ``filename`` in ``out_dir`` atomically (the main process).

        With ``last_checkpoint``, ``last_checkpoint`` is then pointed at it. A failed write
        (``OSError``: a full disk...) removes the temporary file and raises
        :class:`CheckpointWriteError` in every process, naming ``previous``, still intact.
        """
        path = osp.join(self.out_dir, filename)
        tmp_path = temporary_path(path)
        error: Optional[OSError] = None
        try:
            runner.save_checkpoint(
                self.out_dir,
                osp.basename(tmp_path),
                self.file_client_args,
                backend_args=self.backend_args,
                **save_kwargs,
            )
            if is_main_process():
                replace_durably(tmp_path, path)
                if last_checkpoint:
                    write_text_atomically(osp.join(runner.work_dir, 'last_checkpoint'), path)
        except OSError as e:
            error = e
            if osp.lexists(tmp_path):
                os.remove(tmp_path)
        if get_world_size() > 1:  # every process stops if the main one could not write
            reasons = [r for r in all_gather_object(None if error is None else str(error)) if r]
            failure = reasons[0] if reasons else None
        else:
            failure = None if error is None else str(error)
        if failure is None:
            return
        if previous and osp.isfile(previous):
            kept = f'the previous checkpoint {previous} is intact'
            kept += ' and last_checkpoint names it' if last_checkpoint else ''
        else:
            kept = 'no earlier checkpoint exists'
        raise CheckpointWriteError(
            f'could not write the checkpoint {path}: {failure}; nothing was left half-written '
            f'and {kept}. Free space in {self.out_dir} and continue '
            f'with {tool_command("train.py")} ... --resume'
        ) from error

    def _save_best_checkpoint(self, runner, metrics: Dict[str, Any]) -> None:
        """mmengine's ``save_best``, written atomically: the new best before the old one goes."""
        if not self.save_best or not self._atomic:
            super()._save_best_checkpoint(runner, metrics)
            return
        if 'auto' in self.key_indicators:
            self._init_rule(self.rules, [list(metrics.keys())[0]])
        step = runner.epoch if self.by_epoch else runner.iter
        ckpt_filename = self.filename_tmpl.format(step)
        meta = dict(epoch=runner.epoch, iter=runner.iter)
        single = len(self.key_indicators) == 1
        updated = False
        for key_indicator, rule in zip(self.key_indicators, self.rules):
            score_key = 'best_score' if single else f'best_score_{key_indicator}'
            ckpt_key = 'best_ckpt' if single else f'best_ckpt_{key_indicator}'
            score = metrics[key_indicator]
            best = runner.message_hub.get_info(score_key, self.init_value_map[rule])
            if score is None or not self.is_better_than[key_indicator](score, best):
                continue
            updated = True
            old_path = self.best_ckpt_path if single else self.best_ckpt_path_dict[key_indicator]
            name = f'best_{key_indicator}_{ckpt_filename}'.replace('/', '_')
            new_path = osp.join(self.out_dir, name)
            runner.message_hub.update_info(score_key, score)
            runner.message_hub.update_info(ckpt_key, new_path)  # saved in the checkpoint
            try:
                self._write_file(
                    runner,
                    name,
                    previous=old_path,
                    save_optimizer=False,
                    save_param_scheduler=False,
                    meta=meta,
                    by_epoch=False,
                )
            except CheckpointWriteError:
                runner.message_hub.update_info(score_key, best)
                runner.message_hub.update_info(ckpt_key, old_path)
                raise
            if single:
                self.best_ckpt_path = new_path
            else:
                self.best_ckpt_path_dict[key_indicator] = new_path
            if old_path and old_path != new_path and is_main_process() and osp.isfile(old_path):
                os.remove(old_path)
            runner.logger.info(
                f'The best checkpoint with {score:0.4f} {key_indicator} at '
                f'{"epoch" if self.by_epoch else "iter"} {step} is saved to {name}.'
            )
        if updated and self.last_ckpt is not None:
            # the newest checkpoint again, so that its message hub names the new best file
            self._save_checkpoint_with_step(runner, step, meta)
