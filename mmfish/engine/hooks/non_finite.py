"""Skip the optimizer steps whose loss or gradient is not finite; stop after too many in a row.

One NaN or inf loss (a degenerate box, an overflow) writes NaN into every weight that its
gradient reaches, and training goes on producing garbage. :class:`NonFiniteStepHook` wraps the
``update_params`` of the run's optimizer wrapper (``OptimWrapper``, mmengine's
``AmpOptimWrapper``, mmfish's ``PartialAmpOptimWrapper``, or each wrapper of an
``OptimWrapperDict``):

- **Non-finite loss.** The summed loss is checked before ``backward``; if it is NaN or inf (on
  any process: the processes agree, so that none waits in a gradient all-reduce the others
  skipped), there is no ``backward`` and no optimizer step.
- **Non-finite gradient.** Before the step, the gradients are checked (one fused norm over them);
  if any is NaN or inf, they are zeroed and the step is skipped. Under ``AmpOptimWrapper`` the
  loss scaler already skips such steps (fp16 overflow) and lowers its scale: those are its own
  and are not counted here.

A skipped step changes no weight and leaves the optimizer's state untouched; the norm statistics
that the forward pass updated (BatchNorm running means and variances) are put back as they were
before it. The parameter schedulers and the iteration count go on. Every skip is logged with the
losses that were not finite (or, for a gradient, the first parameters whose gradient was not),
and counted: the total and the current streak are kept in the message hub (so in checkpoints).
After ``max_consecutive`` skipped steps in a row the run stops with :class:`NonFiniteTrainingError`
(``tools/train.py`` prints it as one line and exits with status 1): no checkpoint is written for
the skipped steps beyond the hook's own schedule, and every checkpoint on disk holds finite
weights, since no skipped step changed them.

In a config (mmfish's configs have it; ``default_hooks.non_finite=None`` turns it off)::

    default_hooks = dict(non_finite=dict(type='NonFiniteStepHook', max_consecutive=20))
"""

import functools
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import all_gather_object, get_world_size
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict

from mmfish.registry import register_hook
from mmfish.utils.errors import TrainingStopped, listing

DEFAULT_MAX_CONSECUTIVE = 20
SHOWN = 5  # parameters named per skipped step
TOTAL_KEY = 'non_finite_steps'  # message hub runtime info: skipped steps so far
STREAK_KEY = 'non_finite_streak'  # skipped steps in a row up to the last iteration


class NonFiniteTrainingError(TrainingStopped):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


def _is_finite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    try:
        return bool(torch.isfinite(torch.tensor(float(value))))
    except (TypeError, ValueError):
        return True  # not a number: not a loss


def _grads(wrapper: OptimWrapper) -> List[torch.Tensor]:
    return [
        p.grad
        for group in wrapper.optimizer.param_groups
        for p in group['params']
        if p.grad is not None
    ]


def _grads_finite(grads: List[torch.Tensor]) -> bool:
    if not grads:
        return True
    norms = torch._foreach_norm(grads)  # one fused kernel, as clip_grad_norm_ computes them
    return bool(torch.isfinite(torch.stack([n.float() for n in norms]).sum()))


def _any_process(flag: bool, like: torch.Tensor) -> bool:
    """``flag`` or-ed over the processes of a distributed run."""
    if get_world_size() == 1:
        return flag
    device = like.device if torch_dist.get_backend() == 'nccl' else 'cpu'
    tensor = torch.tensor([int(flag)], device=device)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
    return bool(tensor.item())


@register_hook
class NonFiniteStepHook(Hook):
    """Skip steps whose loss or gradient is NaN or inf; stop after ``max_consecutive`` in a row.

    Args:
        max_consecutive: Skipped steps in a row after which training stops with
            :class:`NonFiniteTrainingError`. Defaults to :data:`DEFAULT_MAX_CONSECUTIVE`.
        check_grads: Also check the gradients before each step (one fused norm over them).
            Defaults to True.
    """

    priority = 'ABOVE_NORMAL'  # before the checkpoint hook: a stop saves nothing more

    def __init__(
        self, max_consecutive: int = DEFAULT_MAX_CONSECUTIVE, check_grads: bool = True
    ) -> None:
        if not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(
                f'NonFiniteStepHook: max_consecutive must be a positive int, got '
                f'{max_consecutive!r}; to turn the hook off set default_hooks.non_finite=None'
            )
        self.max_consecutive = max_consecutive
        self.check_grads = check_grads
        self._skip: Optional[str] = None  # why this iteration's step was skipped
        self._bad_params: List[str] = []
        self._buffers: List[torch.Tensor] = []
        self._saved: List[torch.Tensor] = []
        self._wrapped: List[OptimWrapper] = []

    # ---------------------------------------------------------------------------- run lifecycle
    def before_train(self, runner) -> None:
        hub = runner.message_hub
        self.total = int(hub.get_info(TOTAL_KEY, 0) or 0)  # restored by a resume
        self.streak = int(hub.get_info(STREAK_KEY, 0) or 0)
        wrappers = runner.optim_wrapper
        if isinstance(wrappers, OptimWrapperDict):
            wrappers = list(wrappers.values())
        else:
            wrappers = [wrappers]
        model = getattr(runner.model, 'module', runner.model)
        self._names = {id(p): n for n, p in model.named_parameters()}
        self._buffers = [
            b
            for n, b in model.named_buffers()
            if n.endswith(('running_mean', 'running_var', 'num_batches_tracked'))
        ]
        for wrapper in wrappers:
            wrapper.update_params = functools.partial(self._update_params, wrapper)
            self._wrapped.append(wrapper)

    def after_train(self, runner) -> None:
        for wrapper in self._wrapped:
            del wrapper.update_params  # back to the class's method
        self._wrapped = []

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._skip = None
        self._bad_params = []
        if self._buffers:  # what a skipped step puts back (a few values per norm channel)
            if len(self._saved) != len(self._buffers):
                self._saved = [b.detach().clone() for b in self._buffers]
            else:
                torch._foreach_copy_(self._saved, [b.detach() for b in self._buffers])

    # -------------------------------------------------------------------------------- the step
    def _update_params(
        self,
        wrapper: OptimWrapper,
        loss: torch.Tensor,
        step_kwargs: Optional[Dict] = None,
        zero_kwargs: Optional[Dict] = None,
    ) -> None:
        """``OptimWrapper.update_params``, skipping a non-finite loss or gradient."""
        if _any_process(not _is_finite(loss), loss):
            self._skip = 'loss'
            wrapper._inner_count += 1  # the accumulation window goes on as if it had run
            if wrapper.should_update():
                wrapper.zero_grad(**(zero_kwargs or {}))
            return
        wrapper.backward(wrapper.scale_loss(loss))
        if not wrapper.should_update():
            return
        # AmpOptimWrapper's loss scaler skips non-finite gradients itself (its own count).
        if self.check_grads and not hasattr(wrapper, 'loss_scaler'):
            grads = _grads(wrapper)
            if not _grads_finite(grads):
                self._skip = 'gradient'
                self._bad_params = self._non_finite_params(wrapper)
                wrapper.zero_grad(**(zero_kwargs or {}))
                return
        wrapper.step(**(step_kwargs or {}))
        wrapper.zero_grad(**(zero_kwargs or {}))

    def _non_finite_params(self, wrapper: OptimWrapper) -> List[str]:
        return [
            self._names.get(id(p), '?')
            for group in wrapper.optimizer.param_groups
            for p in group['params']
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        hub = runner.message_hub
        if self._skip is None:
            self.streak = 0
            hub.update_info(STREAK_KEY, 0)
            return
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._saved)
        self.total += 1
        self.streak += 1
        hub.update_info(TOTAL_KEY, self.total)
        hub.update_info(STREAK_KEY, self.streak)
        step = runner.iter + 1
        if self._skip == 'loss':
            bad = {
                k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                for k, v in (outputs or {}).items()
                if 'loss' in k and k != 'loss' and not _is_finite(v)
            }
            if get_world_size() > 1:  # every process skipped: name the losses of all
                gathered = all_gather_object(bad)
                bad = {
                    f'{k} (rank {rank})': v
                    for rank, losses in enumerate(gathered)
                    for k, v in losses.items()
                }
            what = 'non-finite loss' + (
                ' (' + ', '.join(f'{k}={v}' for k, v in bad.items()) + ')' if bad else ''
            )
        else:
            what = 'non-finite gradient' + (
                f' ({listing(self._bad_params, SHOWN, "parameter")})' if self._bad_params else ''
            )
        runner.logger.warning(
            f'Iteration {step}: {what}; optimizer step skipped, weights unchanged ({self.streak} '
            f'in a row, {self.total} in this run; training stops after {self.max_consecutive} '
            'in a row)'
        )
        if self.streak >= self.max_consecutive:
            first = step - self.streak + 1
            last_ckpt = hub.get_info('last_ckpt')
            kept = (
                f'the last checkpoint, {last_ckpt}, holds finite weights (no skipped step changed '
                'them)'
                if last_ckpt
                else 'no checkpoint was written yet'
            )
            raise NonFiniteTrainingError(
                f'training stopped at iteration {step}: the {self.streak} optimizer steps of '
                f'iterations {first}-{step} in a row had a {what} and were skipped '
                f'(NonFiniteStepHook.max_consecutive={self.max_consecutive}); {kept}. Fix: a '
                'lower learning rate or warm-up, gradient clipping (optim_wrapper.clip_grad), '
                'fp32 instead of fp16, or the data of these iterations; then continue with '
                '--resume, or raise default_hooks.non_finite.max_consecutive'
            )


__all__ = ['DEFAULT_MAX_CONSECUTIVE', 'NonFiniteStepHook', 'NonFiniteTrainingError']
