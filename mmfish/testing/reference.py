"""The reference network's fixtures (``tests/fixtures/reference``) as the tests use them.

For each variant the fixtures hold the reference's state dict layout, a seed and its outputs;
the weights are rebuilt from the seed by the fixture script's own function
(``tools/dev/make_reference_fixtures.py``, which needs numpy and torch only).
"""

import functools
import json
import os.path as osp
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Tuple

import mmengine.runner.checkpoint as mmengine_checkpoint
import numpy as np
import torch

from .paths import REFERENCE_FIXTURES, ROOT
from .tools import load_module

FIXTURE_SCRIPT = osp.join(ROOT, 'tools', 'dev', 'make_reference_fixtures.py')


@functools.cache
def fixture_tools() -> ModuleType:
    """``tools/dev/make_reference_fixtures.py``: the seeded fill, the checksum, the input."""
    return load_module(FIXTURE_SCRIPT, '_make_reference_fixtures')


def reference_layout(arch: str) -> dict:
    """``<arch>_keys.json``: the reference's keys, shapes and dtypes, the seed, the checksum."""
    with open(osp.join(REFERENCE_FIXTURES, f'{arch}_keys.json')) as f:
        return json.load(f)


def seeded_reference_state_dict(arch: str) -> 'OrderedDict[str, torch.Tensor]':
    """The reference-layout state dict (no ``module.``) with the fixtures' seeded weights."""
    info = reference_layout(arch)
    tools = fixture_tools()
    state_dict = tools.seeded_state_dict(info['layout'], info['seed'])
    total, total_abs = tools.checksum(state_dict)
    assert np.allclose([total, total_abs], info['checksum'], rtol=1e-9, atol=1e-6), (
        'the seeded weights differ from those the fixtures were made with (numpy RNG stream '
        'changed?): regenerate them with tools/dev/make_reference_fixtures.py'
    )
    return state_dict


def reference_checkpoint(state_dict: Dict[str, torch.Tensor], arch: str) -> dict:
    """A dict laid out as the reference's ``*_ckpt.tar`` files (DataParallel prefix included)."""
    return {
        'epoch': 100,
        'arch': arch,
        'state_dict': OrderedDict((f'module.{k}', v) for k, v in state_dict.items()),
        'best_prec1': 77.41,
        'optimizer': {
            'state': {},
            'param_groups': [
                {'lr': 0.1, 'momentum': 0.9, 'weight_decay': 1e-4, 'params': [0, 1, 2]}
            ],
        },
    }


class ReferenceFiles(dict):
    """Per variant, a reference-format ``<arch>_ckpt.tar`` in ``folder``, made on first use."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = Path(folder)

    def __missing__(self, arch: str) -> Path:
        path = self.folder / f'{arch}_ckpt.tar'
        torch.save(reference_checkpoint(seeded_reference_state_dict(arch), arch), path)
        self[arch] = path
        return path


def relative_error(actual: torch.Tensor, expected: np.ndarray) -> float:
    """``|actual - expected| / |expected|`` (Frobenius norms), in float64."""
    actual64 = actual.detach().double().numpy()
    assert actual64.shape == expected.shape
    expected64 = expected.astype(np.float64)
    return float(np.linalg.norm(actual64 - expected64) / np.linalg.norm(expected64))


class LoadSpy:
    """Records the keys mmengine's ``load_state_dict`` finds missing / unexpected.

    Args:
        monkeypatch: pytest's ``monkeypatch`` fixture (undoes the spy after the test).
    """

    def __init__(self, monkeypatch: Any) -> None:
        self.calls: List[Tuple[List[str], List[str]]] = []
        original = mmengine_checkpoint.load_state_dict

        def spy(module, state_dict, strict=False, logger=None):
            own = set(module.state_dict())
            given = set(state_dict)
            self.calls.append((sorted(own - given), sorted(given - own)))
            return original(module, state_dict, strict=strict, logger=logger)

        monkeypatch.setattr(mmengine_checkpoint, 'load_state_dict', spy)

    @property
    def missing(self) -> List[str]:
        assert len(self.calls) == 1, f'expected one load, got {len(self.calls)}'
        return self.calls[0][0]

    @property
    def unexpected(self) -> List[str]:
        assert len(self.calls) == 1, f'expected one load, got {len(self.calls)}'
        return self.calls[0][1]
