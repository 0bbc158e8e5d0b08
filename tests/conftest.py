"""Shared fixtures: a tiny generated shapes dataset and running the tools as subprocesses."""

import os
import os.path as osp
import subprocess
import sys
from typing import Callable, Dict, List, Optional

import pytest

from mmfish.datasets import generate_shapes_coco

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CONFIG = osp.join(ROOT, 'tests', 'data', 'tiny_shapes_config.py')


def data_options(data_root: str) -> List[str]:
    """``--cfg-options`` that point the tiny config's dataloaders and evaluators at a dataset."""
    data_root = data_root.rstrip('/') + '/'
    ann_val = data_root + 'annotations/instances_val.json'
    return [
        f'data_root={data_root}',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'val_evaluator.ann_file={ann_val}',
        f'test_evaluator.ann_file={ann_val}',
    ]


@pytest.fixture(scope='session')
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> str:
    """24 train and 4 val images of 64 px: 12 iterations per epoch at batch 2."""
    root = str(tmp_path_factory.mktemp('shapes') / 'data')
    generate_shapes_coco(root, num_train=24, num_val=4, image_size=64, seed=0)
    return root


@pytest.fixture(scope='session')
def data_opts() -> Callable[[str], List[str]]:
    """:func:`data_options` as a fixture."""
    return data_options


@pytest.fixture(scope='session')
def tool_env() -> Dict[str, str]:
    """The environment for tool subprocesses: this interpreter, one thread per process.

    On 2 shared cores, torch's two OpenMP threads spin-wait for each other whenever another
    process holds a core: a tiny-config iteration then takes 5-10 s instead of 0.2 s.
    """
    threads = {k: os.environ.get(k, '1') for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    return {**os.environ, 'PYTHON': sys.executable, **threads}


def import_tool(folder: str, name: str):
    """Import ``tools/<folder>/<name>.py`` as a module (its folder first on ``sys.path``)."""
    sys.path.insert(0, osp.join(ROOT, 'tools', folder))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope='session')
def run_tool(tool_env: Dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``tools/<script>`` (``.py`` or ``.sh``) in a subprocess; returns it completed."""

    def run(
        script: str,
        *args: str,
        env: Optional[Dict[str, str]] = None,
        timeout: float = 600,
        cwd: Optional[str] = None,
    ) -> subprocess.CompletedProcess:
        cmd = [sys.executable, osp.join(ROOT, 'tools', script), *args]
        if script.endswith('.sh'):
            cmd = ['bash', *cmd[1:]]
        full_env = {**tool_env, **(env or {})}
        return subprocess.run(
            cmd, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
        )

    return run
