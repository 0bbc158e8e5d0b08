"""Fine-tuning from the authors' ImageNet weights: the out norms are the network's own.

In the reference network each feature is normalised next by a trained norm, its consumer's
(``CONSUMER_NORMS``). Converted and loaded through a COCO config's ``Pretrained`` init, the
backbone must return exactly ``relu(consumer_norm(feature))`` of the reference network under
``norm_eval``, with nothing missing or unexpected at load time, and those norms must stay fixed
while training. The expected values are computed here from the reference's stored features
(``tests/fixtures/reference``) and the seeded checkpoint's norm tensors, not by mmfish.
"""

import os.path as osp
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from mmfish.models import FishNet
from mmfish.models.backbones.fishnet import CONSUMER_NORMS
from mmfish.models.converters import convert_checkpoint, map_key
from mmfish.models.converters.convert import convert
from mmfish.testing import (
    REFERENCE_FIXTURES,
    ROOT,
    LoadSpy,
    relative_error,
    seeded_reference_state_dict,
)

ARCHS = ('fishnet99', 'fishnet150', 'fishnet201')
FIXTURES = Path(REFERENCE_FIXTURES)
MAX_RELATIVE_ERROR = 1e-5
BN_EPS = 1e-5

register_all_modules()


def consumer_norm_relu(
    feature: np.ndarray, state_dict: Dict[str, torch.Tensor], mmfish_norm: str
) -> np.ndarray:
    """``relu(norm(feature))`` in eval mode, in float64, from the reference tensors of a norm."""
    inverse = {map_key(k): k for k in state_dict}
    tensor = {
        leaf: state_dict[inverse[f'{mmfish_norm}.{leaf}']].double().numpy()[None, :, None, None]
        for leaf in ('weight', 'bias', 'running_mean', 'running_var')
    }
    x = feature.astype(np.float64)
    normed = (x - tensor['running_mean']) / np.sqrt(tensor['running_var'] + BN_EPS)
    return np.maximum(normed * tensor['weight'] + tensor['bias'], 0.0)


def coco_backbone_cfg(arch: str, checkpoint: str) -> dict:
    """The backbone of ``configs/mask_rcnn_<arch>_fpn_1x_coco.py``, pointed at ``checkpoint``."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', f'mask_rcnn_{arch}_fpn_1x_coco.py'))
    backbone = cfg.model.backbone.to_dict()
    assert backbone['norm_eval'] is True and backbone['out_norm'] is True
    assert backbone['init_cfg']['type'] == 'Pretrained'
    backbone['init_cfg']['checkpoint'] = checkpoint
    return backbone


@pytest.fixture(scope='module')
def converted(tmp_path_factory) -> Dict[str, Path]:
    """Per variant, the reference-format checkpoint converted as a user does (score dropped)."""
    folder = tmp_path_factory.mktemp('finetune')

    class Files(dict):
        def __missing__(self, arch: str) -> Path:
            src = folder / f'{arch}_ckpt.tar'
            state_dict = seeded_reference_state_dict(arch)
            torch.save(
                {'state_dict': OrderedDict(('module.' + k, v) for k, v in state_dict.items())}, src
            )
            dst = folder / f'{arch}_in1k_mmfish.pth'
            convert_checkpoint(str(src), str(dst))
            self[arch] = dst
            return dst

    return Files()


@pytest.mark.parametrize('arch', ARCHS)
def test_coco_backbone_returns_the_networks_own_normalisation(arch, converted, monkeypatch):
    spy = LoadSpy(monkeypatch)
    model = MODELS.build(coco_backbone_cfg(arch, str(converted[arch])))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no "no trained norm" warning either
        model.init_weights()
    assert spy.missing == [] and spy.unexpected == []

    model.train()  # as in training: norm_eval keeps every norm, the out norms too, in eval mode
    assert not any(m.training for m in model.out_norms.values())
    x = torch.from_numpy(np.load(FIXTURES / 'input.npy'))
    reference = np.load(FIXTURES / f'{arch}_outputs.npz')
    state_dict = seeded_reference_state_dict(arch)
    with torch.no_grad():
        outputs = model(x)
    errors = {}
    for index, output in zip(model.out_indices, outputs):
        expected = consumer_norm_relu(reference[f'feat{index}'], state_dict, CONSUMER_NORMS[index])
        errors[index] = relative_error(output, expected)
    print(f'{arch}: relative error against relu(consumer_norm(feature)): {errors}')
    assert max(errors.values()) <= MAX_RELATIVE_ERROR, errors


def test_out_norm_statistics_do_not_move_in_a_training_step(converted):
    model = MODELS.build(coco_backbone_cfg('fishnet99', str(converted['fishnet99'])))
    model.init_weights()
    model.train()
    before = {k: v.clone() for k, v in model.out_norms.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    outputs = model(torch.randn(2, 3, 64, 64))
    sum(o.mean() for o in outputs).backward()
    optimizer.step()
    after = model.out_norms.state_dict()
    for key, value in before.items():
        if 'running' in key or 'num_batches' in key:
            assert torch.equal(after[key], value), f'{key} moved under norm_eval'
    # The affine parameters do train (norm_eval freezes statistics, not weights).
    assert not torch.equal(after['7.weight'], before['7.weight'])


def test_converter_writes_the_consumer_norms_for_the_default_out_indices():
    state_dict = seeded_reference_state_dict('fishnet99')
    out = convert(state_dict)
    assert list(out) == list(FishNet('fishnet99').state_dict())
    inverse = {map_key(k): k for k in state_dict}
    for index in (7, 8, 9, 10):
        for leaf in ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'):
            source = state_dict[inverse[f'{CONSUMER_NORMS[index]}.{leaf}']]
            assert torch.equal(out[f'out_norms.{index}.{leaf}'], source)
    # Feature 10's consumer is the score head's first norm: kept as an out norm, score dropped.
    assert not any(k.startswith('score.') for k in out)
    with_score = convert(state_dict, keep_score=True)
    assert list(with_score) == list(FishNet('fishnet99', num_classes=1000).state_dict())


def test_any_out_indices_get_their_consumer_norm(converted):
    out_indices = (0, 3, 4, 6, 9)
    model = FishNet(
        'fishnet99',
        out_indices=out_indices,
        init_cfg=dict(type='Pretrained', checkpoint=str(converted['fishnet99'])),
    )
    model.init_weights()
    saved = torch.load(converted['fishnet99'], weights_only=True)['state_dict']
    for index in out_indices:
        for leaf in ('weight', 'bias', 'running_mean', 'running_var'):
            assert torch.equal(
                model.out_norms[str(index)].state_dict()[leaf],
                saved[f'{CONSUMER_NORMS[index]}.{leaf}'],
            ), (index, leaf)


def test_earlier_conversion_without_out_norms(converted, tmp_path):
    """A file converted before this change: out norms from consumers, else a warning."""
    saved = torch.load(converted['fishnet99'], weights_only=True)['state_dict']
    old = OrderedDict((k, v) for k, v in saved.items() if not k.startswith('out_norms.'))
    path = tmp_path / 'old.pth'
    torch.save({'state_dict': old}, path)
    model = FishNet('fishnet99', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.warns(UserWarning, match=r'feature\(s\) \[10\].*fishnet2mmdet.py'):
        model.init_weights()
    for index in (7, 8, 9):
        assert torch.equal(
            model.out_norms[str(index)].weight, old[f'{CONSUMER_NORMS[index]}.weight']
        )
    assert torch.equal(model.out_norms['10'].running_var, torch.ones(2112))


def test_positional_out_norm_keys_of_earlier_detectors_still_load():
    """Detectors trained before the out norms were keyed by feature index."""
    model = FishNet('fishnet99')
    state_dict = model.state_dict()
    legacy = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('out_norms.'):
            _, index, leaf = key.split('.')
            position = model.out_indices.index(int(index))
            value = torch.full_like(value, position + 2) if value.is_floating_point() else value
            legacy[f'out_norms.{position}.0.{leaf}'] = value
        else:
            legacy[key] = value
    fresh = FishNet('fishnet99')
    fresh.load_state_dict(legacy, strict=True)
    for position, index in enumerate(model.out_indices):
        assert torch.all(fresh.out_norms[str(index)].weight == position + 2)


def test_training_from_scratch_is_unchanged():
    model = FishNet('fishnet99')
    model.init_weights()
    for norm in model.out_norms.values():
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
        assert torch.all(norm.running_mean == 0) and torch.all(norm.running_var == 1)
