"""Helpers for mmfish's own tests (as ``mmdet.testing`` is for mmdet's): where the tests' inputs
are in the checkout, the tiny FishNet written once, the tools run as a user runs them, configs
pointed at generated data, and the reference network's fixtures.

pytest fixtures built on these live in ``tests/conftest.py``; test files import from here.
"""

from .data import config_importing, data_options, seg_data_options, seg_demo_config
from .paths import (
    REFERENCE_FIXTURES,
    ROOT,
    SEG_DEMO_CONFIG,
    TEST_DATA,
    TEST_DATA_PYTHONPATH,
    TINY_CONFIG,
    TINY_SEG_CONFIG,
)
from .reference import (
    LoadSpy,
    ReferenceFiles,
    fixture_tools,
    reference_checkpoint,
    reference_layout,
    relative_error,
    seeded_reference_state_dict,
)
from .tiny import tiny_arch
from .tools import import_tool, load_module, run_tool, tool_env

__all__ = [
    'REFERENCE_FIXTURES',
    'ROOT',
    'SEG_DEMO_CONFIG',
    'TEST_DATA',
    'TEST_DATA_PYTHONPATH',
    'TINY_CONFIG',
    'TINY_SEG_CONFIG',
    'LoadSpy',
    'ReferenceFiles',
    'config_importing',
    'data_options',
    'fixture_tools',
    'import_tool',
    'load_module',
    'reference_checkpoint',
    'reference_layout',
    'relative_error',
    'run_tool',
    'seeded_reference_state_dict',
    'seg_data_options',
    'seg_demo_config',
    'tiny_arch',
    'tool_env',
]
