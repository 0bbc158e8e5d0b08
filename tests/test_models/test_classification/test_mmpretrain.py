"""FishNet in MMPretrain: the ImageNet configs build the reference classifier, load a converted
checkpoint into it and train a step; tools/test.py evaluates a converted file on an ImageNet-style
folder."""

import glob
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner, load_checkpoint

from mmfish.datasets.shapes_cls import generate_shapes_cls
from mmfish.models import FishNet
from mmfish.models.converters import convert_checkpoint
from mmfish.testing import REFERENCE_FIXTURES, ROOT, relative_error

CONFIGS = Path(ROOT) / 'configs' / 'classification'
IMAGENET_CONFIGS = sorted(p.name for p in CONFIGS.glob('*_in1k.py'))
MAX_RELATIVE_ERROR = 1e-5


def build_classifier(config: str) -> torch.nn.Module:
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile(str(CONFIGS / config))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_every_variant_has_both_recipes():
    assert IMAGENET_CONFIGS == sorted(
        f'{arch}_8xb32{recipe}_in1k.py'
        for arch in ('fishnet99', 'fishnet150', 'fishnet201', 'fishnext150')
        for recipe in ('', '-coslr-lbs-200e')
    )


@pytest.mark.parametrize('config', IMAGENET_CONFIGS)
def test_head_takes_the_backbone_channels(config):
    cfg = Config.fromfile(str(CONFIGS / config))
    backbone = {k: v for k, v in cfg.model.backbone.items() if k != 'type'}
    assert cfg.model.head.in_channels == FishNet(**backbone).out_channels[-1]


@pytest.mark.parametrize('arch', ['fishnet99', 'fishnet150', 'fishnet201'])
def test_converted_classifier_gives_reference_logits(arch, source_files, tmp_path):
    dst = tmp_path / f'{arch}_mmpretrain.pth'
    meta = convert_checkpoint(str(source_files[arch]), str(dst), classifier=True)
    assert meta['model'] == 'ImageClassifier' and meta['arch'] == arch

    model = build_classifier(f'{arch}_8xb32_in1k.py')
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    model.eval()
    x = torch.from_numpy(np.load(osp.join(REFERENCE_FIXTURES, 'input.npy')))
    with torch.no_grad():
        logits = model(x, mode='tensor')
    error = relative_error(
        logits, np.load(osp.join(REFERENCE_FIXTURES, f'{arch}_outputs.npz'))['logits']
    )
    print(f'{arch} ImageClassifier logits relative error {error:.2e}')
    assert error <= MAX_RELATIVE_ERROR


@pytest.fixture(scope='module')
def tiny_imagenet(tmp_path_factory) -> str:
    """ImageNet's layout with annotation files (data_root/{train,val}/..., meta/{train,val}.txt:
    ``path label`` lines, labels among the 1000 classes), 3 images of 64 px per split."""
    root = tmp_path_factory.mktemp('imagenet')
    generate_shapes_cls(str(root), num_train=3, num_val=3, image_size=64)
    (root / 'meta').mkdir()
    for split in ('train', 'val'):
        images = sorted((root / split).glob('*/*.png'))
        lines = [f'{p.parent.name}/{p.name} {i * 300}' for i, p in enumerate(images)]
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return str(root)


def small_run_options(root: str, work_dir: str) -> dict:
    loader = dict(
        batch_size=3, num_workers=0, persistent_workers=False, dataset=dict(data_root=root)
    )
    return {
        'work_dir': work_dir,
        'train_dataloader': loader,
        'val_dataloader': loader,
        'test_dataloader': loader,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 10,
        'default_hooks.logger.interval': 1,
    }


@pytest.mark.parametrize('config', IMAGENET_CONFIGS)
def test_imagenet_config_trains_a_step(config, tiny_imagenet, tmp_path):
    cfg = Config.fromfile(str(CONFIGS / config))
    cfg.merge_from_dict(small_run_options(tiny_imagenet, str(tmp_path / 'work')))
    runner = Runner.from_cfg(cfg)
    model = runner.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner.train()
    assert runner.iter == 1
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith('backbone.stem') for k in changed)
    assert any(k.startswith('head.score.fc') for k in changed)
    assert glob.glob(str(tmp_path / 'work' / 'epoch_1.pth'))


def test_test_tool_evaluates_a_converted_file(source_files, tiny_imagenet, tmp_path, run_tool):
    """tools/test.py CONFIG FILE: the converted ImageNet classifier on an ImageNet-style folder
    (3 images; the accuracy itself means nothing here)."""
    dst = tmp_path / 'fishnet99_in1k_mmpretrain.pth'
    convert_checkpoint(str(source_files['fishnet99']), str(dst), classifier=True)
    result = run_tool(
        'test.py',
        'configs/classification/fishnet99_8xb32_in1k.py',
        str(dst),
        '--work-dir',
        str(tmp_path / 'work'),
        '--cfg-options',
        f'test_dataloader.dataset.data_root={tiny_imagenet}',
        'test_dataloader.batch_size=3',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout + result.stderr
