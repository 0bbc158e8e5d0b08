"""Every R-CNN config under configs/ parses, loads mmfish through custom_imports, and builds.

The mmseg configs under configs/segmentation/ are tested in test_segmentation_configs.py; the
configs of the other model families (RetinaNet, FCOS, Cascade Mask R-CNN, DINO, Mask2Former) in
tests/test_zoo/test_zoo_configs.py."""

import ast
import glob
import os.path as osp
import subprocess
import sys

import mmdet
import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.structures import InstanceData
from torch.nn.modules.batchnorm import _BatchNorm

from mmfish.models import FishNet
from mmfish.testing import ROOT

# mmdet's R-50 configs for the COCO benchmark, tested in test_coco_benchmark.py
BASELINES = osp.join(ROOT, 'configs', 'baselines', '')
CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p
    and not p.startswith(BASELINES)
    and osp.join('configs', 'segmentation') not in p
    and osp.basename(p).startswith(('faster_rcnn_', 'mask_rcnn_'))
)
COCO_CONFIGS = [c for c in CONFIGS if c.endswith('_coco.py')]
# mmdet's configs/scratch/ recipe (docs/training.md, "Training from scratch"); the others
# fine-tune 1x.
SCRATCH_CONFIGS = [c for c in COCO_CONFIGS if c.endswith('_gn-all_scratch_6x_coco.py')]
ONE_X_CONFIGS = [c for c in COCO_CONFIGS if c not in SCRATCH_CONFIGS]
# Variants of which no ImageNet checkpoint exists (docs/backbone.md, "FishNeXt").
NO_IMAGENET_WEIGHTS = ('fishnext150',)

register_all_modules()


def load(config: str) -> Config:
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.model.backbone.init_cfg = None
    return cfg


def test_the_expected_configs_exist():
    names = {osp.basename(c) for c in CONFIGS}
    for kind in ('mask_rcnn', 'faster_rcnn'):
        for arch in ('fishnet99', 'fishnet150', 'fishnet201'):
            assert f'{kind}_{arch}_fpn_1x_coco.py' in names
            assert f'{kind}_{arch}_fpn_gn-all_scratch_6x_coco.py' in names


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_with_neck_fed_by_the_backbone(config):
    cfg = load(config)
    assert cfg.custom_imports == dict(imports=['mmfish'], allow_failed_imports=False)
    assert cfg.model.data_preprocessor.pad_size_divisor == 32
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, FishNet)
    assert list(cfg.model.neck.in_channels) == list(model.backbone.out_channels)
    arch = osp.basename(config).split('_')[2]
    assert model.backbone.arch == {
        **FishNet._parse_arch(arch if arch in FishNet.arch_settings else 'fishnet99')
    }


@pytest.mark.parametrize('config', ONE_X_CONFIGS)
def test_coco_configs_follow_the_1x_recipe(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    arch = osp.basename(config).split('_')[2]
    assert cfg.model.backbone.arch == arch
    init = cfg.model.backbone.init_cfg
    if arch in NO_IMAGENET_WEIGHTS:  # trains from scratch: nothing frozen, norms in train mode
        assert init is None
        assert cfg.model.backbone.frozen_stages == -1 and not cfg.model.backbone.norm_eval
    else:
        # FishNet-150 starts from the strongest published ImageNet weights (docs/weights.md).
        source = 'fishnet150_pytorchcv' if arch == 'fishnet150' else arch
        assert init.type == 'Pretrained'
        assert init.checkpoint == f'checkpoints/{source}_in1k_mmfish.pth'
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.optim_wrapper.clip_grad.max_norm > 0
    assert any(s.type == 'LinearLR' for s in cfg.param_scheduler)  # warm-up
    metrics = cfg.val_evaluator.metric
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert metrics == (['bbox', 'segm'] if 'mask_rcnn' in config else ['bbox'])


def test_fishnet_settings_live_in_one_place():
    """The COCO family: the FishNet model settings are written once, in the shared base;
    every other COCO config is the few lines that differ."""
    base = osp.join('configs', '_base_', 'fishnet150_fpn.py')
    defining = [
        c for c in COCO_CONFIGS + [base] if "type='FishNet'" in open(osp.join(ROOT, c)).read()
    ]
    assert defining == [base]
    for config in COCO_CONFIGS:
        statements = ast.parse(open(osp.join(ROOT, config)).read()).body
        names = [ast.unparse(s.targets[0]) for s in statements if isinstance(s, ast.Assign)]
        assert len(statements) <= 5, f'{config} repeats settings: {names}'


def test_custom_imports_alone_registers_fishnet(tmp_path):
    """A user config that only names mmfish in custom_imports finds FishNet (fresh process)."""
    config = tmp_path / 'user_config.py'
    config.write_text(
        "custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)\n"
        "model = dict(type='FishNet', arch='fishnet99', out_indices=(8,))\n"
    )
    code = (
        'from mmengine.config import Config\n'
        'from mmdet.registry import MODELS\n'
        f'cfg = Config.fromfile({str(config)!r})\n'
        'print(type(MODELS.build(cfg.model)).__name__)\n'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith('FishNet')


def _mask_rcnn_inputs(n: int = 2, size: int = 64):
    inputs, samples = [], []
    for i in range(n):
        inputs.append(torch.randint(0, 255, (3, size, size), dtype=torch.uint8))
        gt = InstanceData()
        gt.bboxes = torch.tensor([[8.0, 8.0, 40.0, 36.0], [20.0, 16.0, 60.0, 60.0]])
        gt.labels = torch.tensor([0, i % 3])
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        masks[0, 8:36, 8:40] = 1
        masks[1, 16:60, 20:60] = 1
        from mmdet.structures.mask import BitmapMasks

        gt.masks = BitmapMasks(masks.numpy(), size, size)
        sample = DetDataSample(
            metainfo=dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size),
                          scale_factor=(1.0, 1.0), batch_input_shape=(size, size))
        )  # fmt: skip
        sample.gt_instances = gt
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_mask_rcnn_with_fishnet_trains_and_predicts_on_cpu():
    cfg = load('configs/demo/mask_rcnn_fishnet99_fpn_shapes_cpu.py')
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    data = model.data_preprocessor(_mask_rcnn_inputs(), training=True)
    losses = model(**data, mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    stem_grad = model.backbone.stem[0].weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(_mask_rcnn_inputs(n=1), training=False)
        results = model(**data, mode='predict')
    pred = results[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and len(pred.masks) == len(pred.bboxes)


# ------------------------------------------------------------------------- from scratch, 6x GN
def _mmdet_scratch(config: str) -> Config:
    kind = 'mask-rcnn' if 'mask_rcnn' in config else 'faster-rcnn'
    configs = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')
    return Config.fromfile(
        osp.join(configs, 'scratch', f'{kind}_r50-scratch_fpn_gn-all_6x_coco.py')
    )


def _plain(value):
    """Config values without the ``_scope_`` keys that ``mmdet::`` bases add."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _get(cfg: Config, dotted: str):
    for part in dotted.split('.'):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize('config', SCRATCH_CONFIGS)
def test_scratch_configs_follow_mmdets_scratch_recipe(config):
    """mmdet's configs/scratch/ settings for ResNet-50, with FishNet: read from mmdet's files."""
    cfg, recipe = Config.fromfile(osp.join(ROOT, config)), _mmdet_scratch(config)
    backbone = cfg.model.backbone
    assert backbone.type == 'FishNet' and backbone.arch == osp.basename(config).split('_')[2]
    assert backbone.init_cfg is None  # the reference initialisation
    assert backbone.frozen_stages == -1 and backbone.norm_eval is False
    assert backbone.norm_cfg.type == 'GN' and backbone.norm_cfg.requires_grad
    same = [
        'model.neck.norm_cfg',
        'model.roi_head.bbox_head',  # Shared4Conv1FCBBoxHead with GN
        'train_cfg.max_epochs',
        'param_scheduler',  # warm-up, steps at epochs 65 and 71
        'optim_wrapper.optimizer',
        'optim_wrapper.paramwise_cfg',  # no weight decay on norms
        'default_hooks.checkpoint.max_keep_ckpts',
        'train_dataloader',
        'auto_scale_lr',
    ]
    if 'mask_rcnn' in config:
        same.append('model.roi_head.mask_head.norm_cfg')
    for key in same:
        assert _plain(_get(cfg, key)) == _plain(_get(recipe, key)), key
    assert cfg.train_cfg.max_epochs == 73
    assert cfg.optim_wrapper.clip_grad.max_norm > 0  # the FishNet family's clipping


@pytest.mark.parametrize('config', SCRATCH_CONFIGS)
def test_scratch_detector_has_no_batch_norm_and_trains_every_layer(config):
    model = MODELS.build(Config.fromfile(osp.join(ROOT, config)).model)
    model.init_weights()
    model.train()
    batch_norms = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]
    assert batch_norms == []
    parts = ['backbone.stem', 'backbone.out_norms', 'neck', 'roi_head.bbox_head']
    parts += ['roi_head.mask_head'] if 'mask_rcnn' in config else []
    for part in parts:
        assert any(
            isinstance(m, torch.nn.GroupNorm)
            for n, m in model.named_modules()
            if n.startswith(part)
        ), f'no GroupNorm in {part}'
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == []
    in_eval = [n for n, m in model.named_modules() if not m.training]
    assert in_eval == []
    # The reference initialisation: norms 1 and 0.
    for norm in (model.backbone.stem[1], model.backbone.out_norms['10']):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_scratch_mask_rcnn_trains_a_step_in_every_layer():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/mask_rcnn_fishnet99_fpn_gn-all_scratch_6x_coco.py')
    )
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = model.data_preprocessor(_mask_rcnn_inputs(), training=True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total) and 'loss_mask' in losses
    total.backward()
    optimizer.step()
    # Every backbone parameter took part and moved, the stem's and its norms' included.
    unmoved = [n for n, p in model.backbone.named_parameters() if torch.equal(p, before[n])]
    assert unmoved == []
