"""Shared fixtures: generated datasets, the reference-format checkpoints, the tools run as
subprocesses. Helpers that are not fixtures live in :mod:`mmfish.testing`."""

import os
import subprocess
from typing import Callable, Dict, Iterator, List

import pytest
import torch
from mmengine.registry import DefaultScope

from mmfish.datasets import generate_shapes_coco
from mmfish.testing import ReferenceFiles, data_options
from mmfish.testing import run_tool as _run_tool
from mmfish.testing import tool_env as _env

# The files that take longest, longest first (seconds of a worker under ``make test`` on the
# 2-core machine, 2026-12-05): ``make test`` runs the files on 2 workers in this order
# (``--dist=loadfile --no-loadscope-reorder``), so that one worker starts the matrix while the
# other takes the rest, instead of the matrix starting last and running alone at the end.
LONGEST_FIRST = (
    'tests/test_zoo/test_zoo_matrix.py',  # 595 (with two processes of its own)
    'tests/test_engine/test_soak_training.py',  # 230
    'tests/test_engine/test_fault_tolerant_training.py',  # 216
)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get('PYTEST_XDIST_WORKER'):
        # One torch thread per worker: on shared cores, OpenMP threads spin-wait for each other
        # whenever another process holds a core (see ``one_thread``).
        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split('::')[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def isolated_default_scope() -> Iterator[None]:
    """Each test starts with the default scopes it found: mmengine's ``DefaultScope`` is global,
    and the latest one created decides where a registry without ``_scope_`` builds from (a toy
    mmengine ``Runner`` leaves ``'mmengine'``, where mmdet's and mmseg's classes are not found).
    """
    before = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)


@pytest.fixture(scope='session')
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> str:
    """24 train and 4 val images of 64 px: 12 iterations per epoch at batch 2."""
    root = str(tmp_path_factory.mktemp('shapes') / 'data')
    generate_shapes_coco(root, num_train=24, num_val=4, image_size=64, seed=0)
    return root


@pytest.fixture(scope='session')
def seg_shapes(tmp_path_factory: pytest.TempPathFactory) -> str:
    """8 train and 4 val images of 64 px with their label maps, for the segmentation tests."""
    root = str(tmp_path_factory.mktemp('seg_shapes') / 'data')
    generate_shapes_coco(root, num_train=8, num_val=4, image_size=64, seed=0)
    return root


@pytest.fixture(scope='session')
def source_files(tmp_path_factory: pytest.TempPathFactory) -> ReferenceFiles:
    """Per variant, a reference-format ``fishnetXX_ckpt.tar`` of the fixtures' seeded weights
    (made on first use)."""
    return ReferenceFiles(str(tmp_path_factory.mktemp('reference_ckpt')))


@pytest.fixture(scope='session')
def data_opts() -> Callable[[str], List[str]]:
    """:func:`mmfish.testing.data_options` as a fixture."""
    return data_options


@pytest.fixture(scope='session')
def tool_env() -> Dict[str, str]:
    """The environment for tool subprocesses (:func:`mmfish.testing.tool_env`), taken once."""
    return _env()


@pytest.fixture(scope='session')
def run_tool(tool_env: Dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``tools/<script>`` in a subprocess (:func:`mmfish.testing.run_tool`) in
    ``tool_env``; returns it completed."""

    def run(script: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return _run_tool(script, *args, base_env=tool_env, **kwargs)

    return run


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: on shared cores two OpenMP threads spin-wait for each other (a float64
    FishNet step takes 10 s instead of 0.3 s); for tests that check values, not speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
