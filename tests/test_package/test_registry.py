"""mmfish's registry policy (``mmfish/registry.py``): every class mmfish registers builds from a
config dict of mmdet's, of mmseg's and of mmfish's scope, as mmengine's runner builds them."""

import sys
import types

import mmdet.registry as mmdet_registry
import pytest
import torch
from mmcv.cnn import build_norm_layer
from mmengine.registry import (
    HOOKS,
    LOOPS,
    MODELS,
    OPTIM_WRAPPERS,
    TRANSFORMS,
    DefaultScope,
    Registry,
)
from torch.utils.data import DataLoader

from mmfish import registry
from mmfish.datasets.lighting import FishNetLighting
from mmfish.engine import (
    CPUAmpOptimWrapper,
    FaultTolerantCheckpointHook,
    NonFiniteStepHook,
    PartialAmpOptimWrapper,
    ResumableEpochBasedTrainLoop,
    ResumableIterBasedTrainLoop,
)
from mmfish.models import CPUSyncBatchNorm, FishNet
from mmfish.models.classification import FishNetClsHead
from mmfish.testing import tiny_arch

mmseg_registry = pytest.importorskip('mmseg.registry')

SCOPES = ('mmdet', 'mmseg', 'mmfish')
# Every class mmfish registers, by kind and name.
REGISTERED = {
    ('MODELS', 'FishNet'): FishNet,
    ('MODELS', 'CPUSyncBN'): CPUSyncBatchNorm,
    ('HOOKS', 'FaultTolerantCheckpointHook'): FaultTolerantCheckpointHook,
    ('HOOKS', 'NonFiniteStepHook'): NonFiniteStepHook,
    ('LOOPS', 'ResumableEpochBasedTrainLoop'): ResumableEpochBasedTrainLoop,
    ('LOOPS', 'ResumableIterBasedTrainLoop'): ResumableIterBasedTrainLoop,
    ('OPTIM_WRAPPERS', 'CPUAmpOptimWrapper'): CPUAmpOptimWrapper,
    ('OPTIM_WRAPPERS', 'PartialAmpOptimWrapper'): PartialAmpOptimWrapper,
    ('MODELS', 'FishNetClsHead'): FishNetClsHead,
    ('TRANSFORMS', 'FishNetLighting'): FishNetLighting,
}


def test_every_mmfish_class_is_in_mmfish_mmdet_and_mmseg():
    """Whatever registry a class of mmfish's is in, it is in all three of its kind."""
    found = {}
    for kind, own in registry.REGISTRIES.items():
        toolboxes = (own, getattr(mmdet_registry, kind), getattr(mmseg_registry, kind))
        for reg in (*toolboxes, own.root):
            for name, cls in reg.module_dict.items():
                if cls.__module__.startswith('mmfish.'):
                    found[kind, name] = cls
        for name, cls in ((n, c) for (k, n), c in found.items() if k == kind):
            assert all(reg.module_dict.get(name) is cls for reg in toolboxes), (kind, name)
    assert found == REGISTERED
    # norms also beside mmcv's own, where build_norm_layer looks outside any scope
    in_root = {name for (kind, name), cls in found.items() if cls in MODELS.module_dict.values()}
    assert in_root == {'CPUSyncBN'}


@pytest.mark.parametrize('scope', SCOPES)
def test_each_class_builds_from_a_config_dict_of_each_scope(scope):
    # mmengine's root registries, as the runner builds a config's dicts
    backbone = MODELS.build(dict(type='FishNet', arch=tiny_arch(), out_indices=(7,), _scope_=scope))
    assert type(backbone) is FishNet
    norm = MODELS.build(dict(type='CPUSyncBN', num_features=4, _scope_=scope))
    assert type(norm) is CPUSyncBatchNorm
    with DefaultScope.overwrite_default_scope(scope):  # how mmcv builds a layer's norm_cfg
        assert type(build_norm_layer(dict(type='CPUSyncBN'), 4)[1]) is CPUSyncBatchNorm
    hook = HOOKS.build(dict(type='FaultTolerantCheckpointHook', interval=2, _scope_=scope))
    assert type(hook) is FaultTolerantCheckpointHook and hook.interval == 2

    runner = types.SimpleNamespace(visualizer=types.SimpleNamespace())
    loader = DataLoader(list(range(4)), batch_size=2)
    loops = {ResumableEpochBasedTrainLoop: 'max_epochs', ResumableIterBasedTrainLoop: 'max_iters'}
    for loop, length in loops.items():
        cfg = {'type': loop.__name__, length: 3, '_scope_': scope}
        built = LOOPS.build(cfg, default_args=dict(runner=runner, dataloader=loader))
        assert type(built) is loop and getattr(built, length) == 3
    for wrapper in (CPUAmpOptimWrapper, PartialAmpOptimWrapper):
        optimizer = torch.optim.SGD(norm.parameters(), lr=0.1)
        cfg = dict(type=wrapper.__name__, optimizer=optimizer, _scope_=scope)
        assert type(OPTIM_WRAPPERS.build(cfg)) is wrapper


def test_the_mmfish_scope_builds_mmdets_and_mmengines_classes_too():
    """``_scope_='mmfish'`` or ``default_scope='mmfish'``: mmdet's classes through the parent."""
    from mmdet.models.necks import FPN

    neck = MODELS.build(
        dict(type='FPN', in_channels=[4, 8], out_channels=4, num_outs=2, _scope_='mmfish')
    )
    assert type(neck) is FPN  # mmdet's (mmseg has an FPN of its own)
    assert type(HOOKS.build(dict(type='CheckpointHook', _scope_='mmfish'))).__name__ == (
        'CheckpointHook'  # mmengine's
    )
    pack = TRANSFORMS.build(dict(type='PackDetInputs', _scope_='mmfish'))
    assert type(pack).__module__.startswith('mmdet.')
    with DefaultScope.overwrite_default_scope('mmfish'):  # a config's default_scope='mmfish'
        assert MODELS.build(dict(type='GN', num_groups=2, num_channels=4)).num_groups == 2


def test_another_toolbox_is_one_name_in_toolboxes(monkeypatch):
    """A toolbox with registries of mmdet's names receives mmfish's classes once named."""
    fake = types.ModuleType('mmfaketoolbox.registry')
    fake.HOOKS = Registry('hook', scope='mmfaketoolbox')
    monkeypatch.setitem(sys.modules, 'mmfaketoolbox', types.ModuleType('mmfaketoolbox'))
    monkeypatch.setitem(sys.modules, 'mmfaketoolbox.registry', fake)
    monkeypatch.setattr(registry, 'TOOLBOXES', (*registry.TOOLBOXES, 'mmfaketoolbox'))
    monkeypatch.setitem(sys.modules, 'mmnotinstalled', None)  # import raises ImportError
    monkeypatch.setattr(registry, 'TOOLBOXES', (*registry.TOOLBOXES, 'mmnotinstalled'))
    assert registry.served_toolboxes() == ['mmdet', 'mmseg', 'mmpretrain', 'mmfaketoolbox']

    class ProbeHook:
        pass

    targets = registry.register_hook.registries()
    try:
        registry.register_hook(ProbeHook)
        assert all(reg.get('ProbeHook') is ProbeHook for reg in targets)
        assert fake.HOOKS in targets
    finally:  # the real registries keep no test class
        for reg in targets:
            reg.module_dict.pop('ProbeHook', None)
