"""Configs pointed at a generated dataset, as the tests give them to the tools."""

from typing import List

from mmengine.config import Config

from .paths import SEG_DEMO_CONFIG, TINY_CONFIG

_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def data_options(data_root: str) -> List[str]:
    """``--cfg-options`` that point the tiny config's dataloaders and evaluators at a dataset."""
    data_root = data_root.rstrip('/') + '/'
    ann_val = data_root + 'annotations/instances_val.json'
    return [
        f'data_root={data_root}',
        *(f'{loader}.dataset.data_root={data_root}' for loader in _LOADERS),
        f'val_evaluator.ann_file={ann_val}',
        f'test_evaluator.ann_file={ann_val}',
    ]


def seg_data_options(data_root: str) -> List[str]:
    """``--cfg-options`` that point a segmentation config's dataloaders at a dataset."""
    return [f'{loader}.dataset.data_root={data_root}' for loader in _LOADERS]


def seg_demo_config(data_root: str, config: str = SEG_DEMO_CONFIG) -> Config:
    """A segmentation config (the demo's by default) with its dataloaders reading ``data_root``."""
    cfg = Config.fromfile(config)
    for loader in _LOADERS:
        cfg[loader].dataset.data_root = data_root
    return cfg


def config_importing(module: str, path: str, base: str = TINY_CONFIG) -> str:
    """Write to ``path`` a config that is ``base`` with ``module`` (a helper of ``tests/data``,
    found through :data:`TEST_DATA_PYTHONPATH`) in its ``custom_imports``; returns ``path``."""
    with open(path, 'w') as f:
        f.write(f'_base_ = {base!r}\n')
        f.write(f"custom_imports = dict(imports=['mmfish', {module!r}])\n")
    return path
