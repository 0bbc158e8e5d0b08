"""FishNet in MMSegmentation: registration, the configs, the demo config's data.

The segmentation data checks are tested in ``tests/test_datasets/test_seg_checks.py``, a tiny
training and test run in ``tests/test_tools/test_e2e_train_test.py``."""

import glob
import os
import os.path as osp
import subprocess
import sys
from typing import Dict

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmfish.datasets import SHAPES_SEG_CLASSES
from mmfish.models import FishNet
from mmfish.testing import ROOT, TINY_SEG_CONFIG, import_tool, seg_demo_config

mmseg = pytest.importorskip('mmseg')
from mmseg.registry import MODELS as SEG_MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402
from mmseg.utils import register_all_modules  # noqa: E402

SEG_CONFIG_DIR = osp.join(ROOT, 'configs', 'segmentation')
# Semantic FPN and UPerNet; the other families' configs (PSPNet, DeepLabV3+, Mask2Former) are
# tested in tests/test_zoo/test_zoo_configs.py.
SEG_CONFIGS = sorted(
    osp.basename(p)
    for p in glob.glob(osp.join(SEG_CONFIG_DIR, '*.py'))
    if osp.basename(p).startswith(('fpn_', 'upernet_'))
)

register_all_modules(init_default_scope=False)


def load(config: str) -> Config:
    cfg = Config.fromfile(config if osp.isabs(config) else osp.join(SEG_CONFIG_DIR, config))
    cfg.model.backbone.init_cfg = None
    return cfg


def build(cfg: Config) -> torch.nn.Module:
    with DefaultScope.overwrite_default_scope('mmseg'):
        return SEG_MODELS.build(cfg.model)


# ------------------------------------------------------------------------------- registration
def test_one_fishnet_class_in_both_toolboxes():
    from mmdet.registry import MODELS as DET_MODELS

    assert DET_MODELS.get('FishNet') is FishNet
    assert SEG_MODELS.get('FishNet') is FishNet
    assert SEG_MODELS.get('mmdet.FishNet') is FishNet


def _run_python(code: str, cwd: str, tool_env: Dict[str, str]) -> subprocess.CompletedProcess:
    env = {**tool_env, 'PYTHONPATH': ROOT + os.pathsep + tool_env.get('PYTHONPATH', '')}
    return subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_custom_imports_alone_registers_fishnet_in_mmseg(tmp_path, tool_env):
    """A user's mmseg config that only names mmfish in custom_imports builds (fresh process)."""
    config = tmp_path / 'user_seg_config.py'
    config.write_text(
        "default_scope = 'mmseg'\n"
        "custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)\n"
        "model = dict(type='EncoderDecoder',\n"
        "    backbone=dict(type='FishNet', arch='fishnet99', out_indices=(7, 8)),\n"
        "    decode_head=dict(type='FCNHead', in_channels=832, in_index=1, channels=8,\n"
        '                     num_convs=1, num_classes=5))\n'
    )
    code = (
        'import torch\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        'from mmseg.registry import MODELS\n'
        f'cfg = Config.fromfile({str(config)!r})\n'
        "init_default_scope('mmseg')\n"
        'model = MODELS.build(cfg.model).eval()\n'
        'print(type(model.backbone).__name__, tuple(model(torch.rand(1, 3, 64, 64)).shape))\n'
    )
    out = _run_python(code, str(tmp_path), tool_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith('FishNet (1, 5, 8, 8)')


def test_mmdet_only_install_keeps_working(tmp_path, tool_env):
    """With mmseg, mmpretrain and timm not importable, ``import mmfish`` still registers FishNet
    in mmdet."""
    code = (
        'import sys\n'
        "sys.modules['mmseg'] = None  # import mmseg now raises ImportError\n"
        "sys.modules['mmpretrain'] = sys.modules['timm'] = None\n"
        'import mmfish\n'
        'from mmfish.registry import served_toolboxes\n'
        'from mmdet.registry import MODELS\n'
        "model = MODELS.build(dict(type='FishNet', arch='fishnet99', out_indices=(8,)))\n"
        "print(*served_toolboxes(), type(model).__name__, sys.modules['mmseg'])\n"
    )
    out = _run_python(code, str(tmp_path), tool_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['mmdet', 'FishNet', 'None']


# ------------------------------------------------------------------------------------ configs
def test_the_expected_configs_exist():
    for arch in ('fishnet99', 'fishnet150', 'fishnet201'):
        assert f'fpn_{arch}_4xb2-80k_cityscapes-512x1024.py' in SEG_CONFIGS
        assert f'upernet_{arch}_4xb4-160k_ade20k-512x512.py' in SEG_CONFIGS
    assert len(SEG_CONFIGS) == 6


@pytest.mark.parametrize('config', SEG_CONFIGS)
def test_config_recipe_and_build(config):
    raw = Config.fromfile(osp.join(SEG_CONFIG_DIR, config))
    arch = config.split('_')[1]
    assert raw.custom_imports == dict(imports=['mmfish'], allow_failed_imports=False)
    assert raw.default_scope == 'mmseg'
    # the ImageNet start of the detection configs of the same variant (docs/weights.md)
    detection = Config.fromfile(osp.join(ROOT, 'configs', f'mask_rcnn_{arch}_fpn_1x_coco.py'))
    init = raw.model.backbone.init_cfg
    assert init == dict(type='Pretrained', checkpoint=detection.model.backbone.init_cfg.checkpoint)
    # fault-tolerant, as the detection configs, with mmseg's iteration settings
    assert raw.default_hooks.checkpoint.type == 'FaultTolerantCheckpointHook'
    assert not raw.default_hooks.checkpoint.by_epoch
    assert raw.train_cfg.type == 'ResumableIterBasedTrainLoop'
    assert raw.model.pretrained is None
    assert raw.model.data_preprocessor.test_cfg == dict(size_divisor=32)
    if config.startswith('fpn_'):
        assert raw.model.decode_head.num_classes == 19
        assert raw.train_dataloader.dataset.type == 'CityscapesDataset'
        assert raw.train_cfg.max_iters == 80000
    else:
        assert raw.model.decode_head.num_classes == 150
        assert raw.model.auxiliary_head.num_classes == 150
        assert raw.train_dataloader.dataset.type == 'ADE20KDataset'
        assert raw.train_cfg.max_iters == 160000
    assert raw.val_evaluator.type == 'IoUMetric'

    model = build(load(config))
    assert isinstance(model.backbone, FishNet)
    assert model.backbone.arch == FishNet._parse_arch(arch)
    fed = raw.model.neck.in_channels if 'neck' in raw.model else raw.model.decode_head.in_channels
    assert list(fed) == list(model.backbone.out_channels)
    if 'auxiliary_head' in raw.model:
        aux = raw.model.auxiliary_head
        assert aux.in_channels == model.backbone.out_channels[aux.in_index]
        assert model.backbone.out_strides[aux.in_index] == 16


def _predict(model: torch.nn.Module, h: int, w: int) -> SegDataSample:
    """The prediction for one random image of h x w, through the data preprocessor."""
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
    data = dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)], data_samples=[sample])
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(data, training=False)
        return model.predict(**data)[0]


@pytest.mark.parametrize(
    'config, num_classes',
    [
        ('fpn_fishnet150_4xb2-80k_cityscapes-512x1024.py', 19),
        ('upernet_fishnet150_4xb4-160k_ade20k-512x512.py', 150),
    ],
)
def test_configs_give_logits_of_the_class_count_at_512(config, num_classes):
    cfg = load(config)
    # Speed only: FishNet-99 and a narrow decoder; the full configs build in the test above.
    cfg.model.backbone.arch = 'fishnet99'
    cfg.model.decode_head.channels = 32
    model = build(cfg)
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 512, 512), mode='tensor')
    assert logits.shape == (1, num_classes, 128, 128)
    # A test image whose sides are not multiples of 32 (ADE20K's are not) is padded for FishNet
    # and its logits cropped back.
    pred = _predict(model, 200, 328)
    assert pred.seg_logits.data.shape == (num_classes, 200, 328)
    assert pred.pred_sem_seg.data.shape == (1, 200, 328)


@pytest.mark.parametrize('variant', ['body', 'head', 'mix'])
def test_feature_choice_variants_build_and_run(variant):
    """The variants tools/analysis_tools/seg_feature_choice.py measures are valid configs."""
    seg_feature_choice = import_tool('analysis_tools', 'seg_feature_choice')
    VARIANTS, variant_options = seg_feature_choice.VARIANTS, seg_feature_choice.variant_options
    from mmengine.config import DictAction

    cfg = load(TINY_SEG_CONFIG)
    options = {}
    for option in variant_options(VARIANTS[variant], width=16):
        key, value = option.split('=', 1)
        options[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(options)
    cfg.model.backbone.arch = 'fishnet99'
    model = build(cfg)
    assert model.backbone.out_indices == VARIANTS[variant]
    assert list(cfg.model.neck.in_channels) == list(model.backbone.out_channels)
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), mode='tensor')
    stride = min(model.backbone.out_strides)
    assert logits.shape == (1, 4, 64 // stride, 64 // stride)


# ------------------------------------------------------------------------------ the demo's data
def test_mmseg_reads_the_label_maps(seg_shapes):
    from mmseg.registry import DATASETS

    cfg = seg_demo_config(seg_shapes)
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(dataset) == 8
    assert dataset.metainfo['classes'] == SHAPES_SEG_CLASSES
    item = dataset[0]
    gt = item['data_samples'].gt_sem_seg.data
    # the demo trains on whole images resized to image_size, label maps with them
    assert gt.shape == (1, *cfg.image_size) and item['inputs'].shape[-2:] == cfg.image_size
    assert set(gt.unique().tolist()) <= {0, 1, 2, 3} and (gt > 0).any()
    # and tests on images so resized, against label maps of the original size (IoUMetric)
    with DefaultScope.overwrite_default_scope('mmseg'):
        val_item = DATASETS.build(cfg.val_dataloader.dataset)[0]
    assert val_item['inputs'].shape[-2:] == cfg.image_size
    assert val_item['data_samples'].gt_sem_seg.data.shape == (1, 64, 64)
    assert val_item['data_samples'].ori_shape == (64, 64)
