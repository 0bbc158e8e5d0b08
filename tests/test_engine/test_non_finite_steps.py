"""Steps with a NaN or inf loss or gradient are skipped, counted, and stop a run that keeps failing.

:class:`~mmfish.engine.hooks.NonFiniteStepHook` on a toy model (a linear layer and a BatchNorm,
fast) with mmengine's ``OptimWrapper`` and ``AmpOptimWrapper`` (its loss scaler on the CPU) and
mmfish's ``PartialAmpOptimWrapper`` (bf16, no scaler), and
on the tiny config through ``tools/train.py`` with faults injected by
``tests/data/inject_faults.py``.
"""

import glob
import os.path as osp
import socket
import uuid
from types import SimpleNamespace
from typing import Callable, Dict

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmfish.engine.hooks import NonFiniteStepHook, NonFiniteTrainingError
from mmfish.engine.optimizers import PartialAmpOptimWrapper
from mmfish.testing import ROOT, TEST_DATA_PYTHONPATH, config_importing


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x))


class _NanGrad(torch.autograd.Function):
    """The identity, whose gradient is NaN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float('nan'))


def _runner(wrapper_type=OptimWrapper, **wrapper_kwargs) -> SimpleNamespace:
    torch.manual_seed(0)
    model = _Toy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    wrapper = wrapper_type(optimizer=optimizer, **wrapper_kwargs)
    # A name of its own: id(model) can be reused after a collection, and with it a hub (a
    # process-wide singleton) that counted an earlier test's skips.
    hub = MessageHub.get_instance(f'non_finite_{uuid.uuid4().hex}')
    warnings = []
    logger = SimpleNamespace(warning=warnings.append, info=lambda message: None, warnings=warnings)
    return SimpleNamespace(
        model=model, optim_wrapper=wrapper, message_hub=hub, logger=logger, iter=0
    )


def _snapshot(runner, buffers: bool = True) -> Dict[str, torch.Tensor]:
    """The model's parameters (and buffers) and the optimizer's state."""
    model = runner.model
    named = model.state_dict().items() if buffers else model.named_parameters()
    state = {k: v.detach().clone() for k, v in named}
    for i, s in runner.optim_wrapper.optimizer.state_dict()['state'].items():
        state.update({f'opt.{i}.{k}': torch.as_tensor(v).clone() for k, v in s.items()})
    return state


def _equal(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_iter(hook: NonFiniteStepHook, runner, fault: str = '') -> None:
    """One iteration as mmengine's loop and a model's ``train_step`` run it."""
    hook.before_train_iter(runner, runner.iter)
    x = torch.randn(8, 4) * (float('inf') if fault == 'activation' else 1)
    out = runner.model(x)
    loss_a = out.pow(2).mean()
    loss_b = out.abs().mean()
    if fault == 'loss':
        loss_b = loss_b * float('nan')
    if fault == 'grad':
        loss_b = _NanGrad.apply(loss_b)
    log_vars = dict(loss=loss_a + loss_b, loss_a=loss_a, loss_b=loss_b)
    runner.optim_wrapper.update_params(loss_a + loss_b)
    hook.after_train_iter(runner, runner.iter, outputs=log_vars)
    runner.iter += 1


@pytest.mark.parametrize('wrapper', [OptimWrapper, PartialAmpOptimWrapper])
@pytest.mark.parametrize('fault', ['loss', 'grad'])
def test_a_non_finite_step_changes_nothing_and_is_counted(fault: str, wrapper) -> None:
    runner = _runner(wrapper)
    hook = NonFiniteStepHook(max_consecutive=3)
    hook.before_train(runner)
    _train_iter(hook, runner)  # a good step: the optimizer state exists
    before = _snapshot(runner)
    _train_iter(hook, runner, fault)
    after = _snapshot(runner)
    assert _equal(before, after), 'a skipped step changed the weights or the optimizer state'
    assert all(torch.isfinite(v).all() for v in after.values())
    assert runner.message_hub.get_info('non_finite_steps') == 1
    assert runner.message_hub.get_info('non_finite_streak') == 1
    warning = [w for w in runner.logger.warnings if w.startswith('Iteration 2:')]
    if fault == 'loss':
        assert 'non-finite loss (loss_b=nan)' in warning[0]
    else:
        assert 'non-finite gradient' in warning[0] and 'fc.weight' in warning[0]
    _train_iter(hook, runner)  # the next good step trains again and ends the streak
    assert not _equal(after, _snapshot(runner))
    assert runner.message_hub.get_info('non_finite_streak') == 0
    assert runner.message_hub.get_info('non_finite_steps') == 1
    hook.after_train(runner)
    assert 'update_params' not in vars(runner.optim_wrapper)


def test_norm_statistics_of_a_skipped_step_are_put_back() -> None:
    runner = _runner()
    hook = NonFiniteStepHook()
    hook.before_train(runner)
    _train_iter(hook, runner)
    before = _snapshot(runner)
    _train_iter(hook, runner, 'activation')  # inf inputs: NaN batch statistics and loss
    assert _equal(before, _snapshot(runner))


def test_too_many_in_a_row_stop_the_run() -> None:
    runner = _runner()
    hook = NonFiniteStepHook(max_consecutive=3)
    hook.before_train(runner)
    _train_iter(hook, runner)
    _train_iter(hook, runner, 'loss')
    _train_iter(hook, runner)  # the streak starts again
    _train_iter(hook, runner, 'loss')
    _train_iter(hook, runner, 'grad')
    with pytest.raises(NonFiniteTrainingError, match=r'iterations 4-6 in a row') as error:
        _train_iter(hook, runner, 'loss')
    assert 'max_consecutive=3' in str(error.value) and '--resume' in str(error.value)
    assert runner.message_hub.get_info('non_finite_steps') == 4


def test_amp_loss_scaler_skips_are_its_own(monkeypatch) -> None:
    """Under ``AmpOptimWrapper`` a non-finite gradient is the loss scaler's skip (it lowers its
    scale), not counted again; a non-finite loss is skipped before the scaler sees it."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module

    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    runner = _runner(AmpOptimWrapper, loss_scale=dict(init_scale=1024.0))
    runner.optim_wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    scaler = runner.optim_wrapper.loss_scaler
    hook = NonFiniteStepHook()
    hook.before_train(runner)
    _train_iter(hook, runner)
    assert scaler.get_scale() == 1024.0
    before = _snapshot(runner, buffers=False)
    _train_iter(hook, runner, 'grad')
    assert _equal(before, _snapshot(runner, buffers=False))  # skipped by the scaler ...
    assert scaler.get_scale() == 512.0
    assert runner.message_hub.get_info('non_finite_steps', 0) == 0  # ... and not counted here
    _train_iter(hook, runner, 'loss')
    assert _equal(before, _snapshot(runner, buffers=False))
    assert scaler.get_scale() == 512.0  # the scaler never saw the NaN loss
    assert runner.message_hub.get_info('non_finite_steps') == 1


def test_bad_max_consecutive_is_refused() -> None:
    with pytest.raises(ValueError, match='default_hooks.non_finite=None'):
        NonFiniteStepHook(max_consecutive=0)


# ------------------------------------------------------------------------ the tiny config
@pytest.mark.slow
def test_tiny_config_skips_injected_nan_steps_then_stops(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    """NaN loss at iteration 3, NaN gradient at 5, NaN losses from 8 on with max_consecutive=3:
    3 and 5 are skipped with the weights and optimizer state of 2 and 4; the run stops at 10 in
    one line, with exit status 1, its last checkpoint that of iteration 9 (= 7's weights)."""
    config = config_importing('inject_faults', str(tmp_path / 'faults.py'))
    work = str(tmp_path / 'work')
    env = {
        'PYTHONPATH': TEST_DATA_PYTHONPATH,
        'MMFISH_NAN_LOSS_ITERS': '3,8,9,10,11',
        'MMFISH_NAN_GRAD_ITERS': '5',
    }
    proc = run_tool(
        'train.py', config, '--work-dir', work, '--cfg-options', *data_opts(tiny_shapes),
        'default_hooks.checkpoint.by_epoch=False', 'default_hooks.non_finite.max_consecutive=3',
        env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith('train.py: stopped: NonFiniteTrainingError: training stopped at')
    assert 'iterations 8-10 in a row had a non-finite loss (loss_bbox=nan)' in last_line
    assert 'Traceback' not in proc.stderr
    log = proc.stdout + proc.stderr
    assert 'Iteration 3: non-finite loss (loss_bbox=nan); optimizer step skipped' in log
    assert 'Iteration 5: non-finite gradient (' in log

    def load(step: int) -> dict:
        return torch.load(osp.join(work, f'iter_{step}.pth'))

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a['state_dict'][k], b['state_dict'][k]) for k in a['state_dict'])

    def same_optimizer(a: dict, b: dict) -> bool:
        sa, sb = a['optimizer']['state'], b['optimizer']['state']
        return sa.keys() == sb.keys() and all(
            torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i]
        )

    assert same(load(2), load(3)) and same_optimizer(load(2), load(3))
    assert same(load(4), load(5)) and same_optimizer(load(4), load(5))
    assert not same(load(3), load(4)) and not same(load(6), load(7))
    assert same(load(7), load(9)) and same_optimizer(load(7), load(9))
    assert not osp.exists(osp.join(work, 'iter_10.pth'))
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_9.pth')
    last = load(9)
    assert all(torch.isfinite(v).all() for v in last['state_dict'].values())
    assert last['message_hub']['runtime_info']['non_finite_steps'] == 4


@pytest.mark.slow  # reads 24 configs: 8-20 s on 2 shared cores
def test_every_mmfish_config_has_the_hook() -> None:
    """On by default: every config that trains (the COCO, segmentation and demo configs, and the
    tests' tiny ones); ``default_hooks.non_finite=None`` turns it off."""
    configs = sorted(
        glob.glob(osp.join(ROOT, 'configs', '**', '*fishnet*.py'), recursive=True)
        + glob.glob(osp.join(ROOT, 'tests', 'data', 'tiny_*config.py'))
    )
    configs = [c for c in configs if '_base_' not in c]
    assert len(configs) > 20
    missing = [
        osp.relpath(c, ROOT)
        for c in configs
        if (Config.fromfile(c).default_hooks.get('non_finite') or {}).get('type')
        != 'NonFiniteStepHook'
    ]
    assert not missing, f'configs without NonFiniteStepHook: {missing}'


@pytest.mark.slow
def test_two_processes_agree_on_a_nan_loss_of_one(
    tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
) -> None:
    """tools/dist_train.sh, 2 processes (gloo): a NaN loss at iteration 2 and a NaN gradient at 4,
    on rank 1 only. Both processes skip both steps (no gradient all-reduce waits for a process
    that skipped its backward pass), and the run ends normally."""
    config = config_importing('inject_faults', str(tmp_path / 'faults.py'))
    work = str(tmp_path / 'work')
    env = {
        'PYTHONPATH': TEST_DATA_PYTHONPATH,
        'MMFISH_FAULT_RANK': '1',
        'MMFISH_NAN_LOSS_ITERS': '2',
        'MMFISH_NAN_GRAD_ITERS': '4',
        'PORT': _free_port(),
    }
    proc = run_tool(
        'dist_train.sh', config, '2', '--work-dir', work, '--cfg-options', *data_opts(tiny_shapes),
        'train_cfg.max_epochs=1', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.by_epoch=False', env=env, timeout=300,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'Iteration 2: non-finite loss (loss_bbox (rank 1)=nan); optimizer step skipped' in log
    assert 'Iteration 4: non-finite gradient (' in log

    def weights(step: int) -> dict:
        return torch.load(osp.join(work, f'iter_{step}.pth'))['state_dict']

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(weights(1), weights(2)) and same(weights(3), weights(4))
    assert not same(weights(2), weights(3)) and not same(weights(4), weights(5))
