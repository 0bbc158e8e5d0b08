"""A ``Pretrained`` checkpoint is read once at a training start, checked, and loaded.

FishNet checks the file before loading it (``fishnet_pretrained``); the check and the load share
one read. Counted at ``torch.load``, which every read of a local checkpoint goes through
(mmengine's loader included). The models stop after the first tail stage (``out_indices=(1,)``):
a few layers, the checks and the loading code all the same.
"""

import os
from typing import Dict, List

import pytest
import torch
from mmengine.model import BaseModule

from mmfish.models import FishNet
from mmfish.models.backbones.fishnet_pretrained import PretrainedMismatchError

SMALL = dict(arch='fishnet99', out_indices=(1,))


class ReadCounter:
    """Counts the ``torch.load`` calls that read one file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
        self.path = os.path.realpath(path)
        self.calls: List[dict] = []
        original = torch.load

        def counting_load(f, *args, **kwargs):
            if isinstance(f, (str, os.PathLike)) and os.path.realpath(f) == self.path:
                self.calls.append(kwargs)
            return original(f, *args, **kwargs)

        monkeypatch.setattr(torch, 'load', counting_load)


def _trained_state_dict() -> Dict[str, torch.Tensor]:
    """A state dict of ``SMALL`` that no fresh model has: every value moved off its init."""
    model = FishNet(**SMALL)
    state_dict = model.state_dict()
    with torch.no_grad():
        for value in state_dict.values():
            if value.is_floating_point():
                value.add_(torch.rand_like(value) + 0.5)
    return state_dict


def _assert_loaded(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(state_dict)
    different = [k for k, v in state_dict.items() if not torch.equal(own[k], v)]
    assert different == [], f'not loaded: {different[:5]}'


@pytest.mark.parametrize('prefix', [None, 'backbone.'])
def test_pretrained_file_is_read_once_and_loaded(tmp_path, monkeypatch, prefix):
    state_dict = _trained_state_dict()
    saved = {f'{prefix or "module."}{k}': v for k, v in state_dict.items()}  # module.: stripped
    path = str(tmp_path / 'pretrained.pth')
    torch.save({'state_dict': saved}, path)
    init_cfg = dict(type='Pretrained', checkpoint=path)
    if prefix is not None:
        init_cfg['prefix'] = prefix
    model = FishNet(**SMALL, init_cfg=init_cfg)

    reads = ReadCounter(monkeypatch, path)
    model.init_weights()
    assert len(reads.calls) == 1, f'{path} was read {len(reads.calls)} times'
    assert reads.calls[0].get('map_location') == 'cpu'  # PretrainedInit's default
    _assert_loaded(model, state_dict)
    assert model.is_init

    model.init_weights()  # a second call does nothing (mmengine warns), reads nothing
    assert len(reads.calls) == 1


def test_inside_a_model_read_once_after_the_other_init_configs(tmp_path, monkeypatch):
    """In a detector-like parent, and with another init config on the backbone: the other
    config runs first and the checkpoint then overwrites it, as mmengine orders them."""
    state_dict = _trained_state_dict()
    path = str(tmp_path / 'pretrained.pth')
    torch.save(state_dict, path)  # a bare state dict

    class Parent(BaseModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = FishNet(
                **SMALL,
                init_cfg=[
                    dict(type='Constant', layer='Conv2d', val=0.0),
                    dict(type='Pretrained', checkpoint=path),
                ],
            )
            self.neck = torch.nn.Conv2d(2, 2, 1)

    parent = Parent()
    reads = ReadCounter(monkeypatch, path)
    parent.init_weights()
    assert len(reads.calls) == 1
    _assert_loaded(parent.backbone, state_dict)


def test_a_refused_file_is_read_once_and_nothing_is_loaded(tmp_path, monkeypatch):
    # The keys of this model's stages, but the converter's meta says: another variant.
    meta = dict(arch='fishnet150', layout='reference', source='fishnet150_ckpt.tar')
    path = str(tmp_path / 'fishnet150.pth')
    torch.save({'state_dict': _trained_state_dict(), 'meta': meta}, path)
    model = FishNet(**SMALL, init_cfg=dict(type='Pretrained', checkpoint=path))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    reads = ReadCounter(monkeypatch, path)
    with pytest.raises(PretrainedMismatchError, match="FishNet 'fishnet150' weights"):
        model.init_weights()
    assert len(reads.calls) == 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
