"""Where the tests' inputs are in the repository checkout the tests run in."""

import os
import os.path as osp

#: The repository root (the folder of ``mmfish/``, ``configs/``, ``tools/`` and ``tests/``).
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TEST_DATA = osp.join(ROOT, 'tests', 'data')
#: ``PYTHONPATH`` for a tool whose config imports a helper module of ``tests/data``.
TEST_DATA_PYTHONPATH = os.pathsep.join([TEST_DATA, ROOT])
#: The shapes demo (Mask R-CNN + FishNet) shrunk to run in seconds on a CPU.
TINY_CONFIG = osp.join(TEST_DATA, 'tiny_shapes_config.py')
#: The segmentation demo (Semantic FPN + FishNet) shrunk likewise.
TINY_SEG_CONFIG = osp.join(TEST_DATA, 'tiny_seg_config.py')
#: The segmentation demo's config, as ``make demo-seg`` trains it.
SEG_DEMO_CONFIG = osp.join(ROOT, 'configs', 'segmentation', 'demo', 'fpn_fishnet99_shapes_cpu.py')
#: The reference network's state dict layouts and outputs (their README says how they were made).
REFERENCE_FIXTURES = osp.join(ROOT, 'tests', 'fixtures', 'reference')
