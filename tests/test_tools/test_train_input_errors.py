"""tools/train.py stops on a bad input before it writes anything, in one line, with a right fix.

Weights (a missing ``Pretrained`` file, a FishNet-99 ImageNet file given to a FishNet-150
config), data (a missing annotation file, a missing image folder) and config (a model that
cannot be built): no work dir, no log, no dumped config; the fix for another variant's file
names that variant's config and never converts FishNet-150 weights under the FishNet-99 name.
"""

import os
import os.path as osp
import re
import shutil
from pathlib import Path
from typing import Callable

import pytest
from mmengine.config import Config

from mmfish.models.backbones.fishnet_pretrained import PretrainedMismatchError
from mmfish.models.converters import convert_checkpoint
from mmfish.testing import ROOT, TINY_CONFIG, load_module
from mmfish.utils.cli import CliError

FISHNET150_CONFIG = osp.join(ROOT, 'configs', 'mask_rcnn_fishnet150_fpn_1x_coco.py')
FISHNET99_CONFIG = osp.join(ROOT, 'configs', 'mask_rcnn_fishnet99_fpn_1x_coco.py')
# A conversion that would write FishNet-150 weights under a FishNet-99 file name.
WRONG_CONVERSION = re.compile(r'fishnet2mmdet\.py \S+ \S*fishnet99\S* --arch fishnet150')


@pytest.fixture(scope='module')
def train_tool():
    return load_module(osp.join(ROOT, 'tools', 'train.py'), 'train_tool')


@pytest.fixture(scope='module')
def fishnet99_file(source_files, tmp_path_factory) -> str:
    """FishNet-99 ImageNet weights converted as a user converts them, under their own name."""
    path = tmp_path_factory.mktemp('weights') / 'checkpoints' / 'fishnet99_in1k_mmfish.pth'
    path.parent.mkdir()
    convert_checkpoint(str(source_files['fishnet99']), str(path))
    return str(path)


def _fishnet150_with(checkpoint: str) -> Config:
    cfg = Config.fromfile(FISHNET150_CONFIG)
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    return cfg


def test_another_variants_file_names_its_config(train_tool, fishnet99_file: str) -> None:
    with pytest.raises(PretrainedMismatchError) as error:
        train_tool.check_model(_fishnet150_with(fishnet99_file), FISHNET150_CONFIG)
    message = str(error.value)
    assert "it holds FishNet 'fishnet99' weights" in message
    assert (
        f'to fine-tune fishnet99 from this file, train a fishnet99 config ({FISHNET99_CONFIG}, '
        'the fishnet99 version of this config) or set model.backbone.arch=fishnet99' in message
    )
    # FishNet-150 weights go to the FishNet-150 file name the configs expect, not to this one
    assert (
        'fishnet150-0475-93e26daa.pth checkpoints/fishnet150_pytorchcv_in1k_mmfish.pth --arch '
        'fishnet150`, and set model.backbone.init_cfg.checkpoint='
        'checkpoints/fishnet150_pytorchcv_in1k_mmfish.pth' in message
    )
    assert not WRONG_CONVERSION.search(message), message


def test_a_missing_file_named_for_another_variant(train_tool, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _fishnet150_with('checkpoints/fishnet99_in1k_mmfish.pth')
    with pytest.raises(FileNotFoundError) as error:
        train_tool.check_model(cfg, FISHNET150_CONFIG)
    message = str(error.value)
    assert "'checkpoints/fishnet99_in1k_mmfish.pth' not found" in message
    assert 'Its name is that of a fishnet99 file: to fine-tune fishnet99, train a fishnet99' in (
        message
    )
    assert not WRONG_CONVERSION.search(message), message


def test_a_model_that_cannot_be_built_is_one_config_error(train_tool) -> None:
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.model.backbone.arch = 'fishnet50'
    with pytest.raises(CliError, match=r"cannot be built: KeyError: \"Unknown FishNet arch 'fish"):
        train_tool.check_model(cfg, TINY_CONFIG)


def test_a_config_that_cannot_be_read_is_one_error(tmp_path) -> None:
    """train.py and test.py read their config with ``read_config``."""
    from mmfish.utils.cli import read_config

    bad = tmp_path / 'bad.py'
    bad.write_text('model = dict(\n')
    with pytest.raises(CliError, match=f'the config {bad} cannot be read: SyntaxError'):
        read_config(str(bad), None)
    with pytest.raises(CliError, match="cannot be read: KeyError: 'Index 9 exceeds the length"):
        read_config(TINY_CONFIG, {'model.neck.in_channels.9': 1})  # a --cfg-options typo
    assert read_config(TINY_CONFIG, {'train_cfg.max_epochs': 3}).train_cfg.max_epochs == 3


# --------------------------------------------------------------------------- through train.py
def _no_traceback_one_line(stderr: str) -> str:
    assert 'Traceback' not in stderr, stderr[-3000:]
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith('train.py: error: '), stderr[-3000:]
    return last_line


@pytest.mark.slow
@pytest.mark.parametrize(
    'case',
    [
        'fishnet99-file',
        'missing-weights',
        'missing-ann-file',
        'missing-images',
        'bad-arch',
        'bad-config',
    ],
)
def test_bad_input_stops_before_anything_is_written(
    case: str,
    tmp_path,
    tiny_shapes: str,
    data_opts: Callable,
    run_tool: Callable,
    fishnet99_file: str,
) -> None:
    data = str(tmp_path / 'data')
    shutil.copytree(tiny_shapes, data)
    config, opts = TINY_CONFIG, data_opts(data)
    expected = ''
    if case == 'fishnet99-file':  # the real FishNet-150 config, on the shapes data
        config = FISHNET150_CONFIG
        opts = [
            *(f'{loader}.dataset.data_root={data}/' for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')),  # noqa: E501
            'train_dataloader.dataset.ann_file=annotations/instances_train.json',
            'train_dataloader.dataset.data_prefix.img=train/',
            'val_dataloader.dataset.ann_file=annotations/instances_val.json',
            'val_dataloader.dataset.data_prefix.img=val/',
            'test_dataloader.dataset.ann_file=annotations/instances_val.json',
            'test_dataloader.dataset.data_prefix.img=val/',
            f'val_evaluator.ann_file={data}/annotations/instances_val.json',
            f'test_evaluator.ann_file={data}/annotations/instances_val.json',
            f'model.backbone.init_cfg.checkpoint={fishnet99_file}',
        ]  # fmt: skip
        expected = 'the fishnet99 version of this config'
    elif case == 'missing-weights':
        config = str(tmp_path / 'pretrained.py')
        with open(config, 'w') as f:
            f.write(
                f'_base_ = {TINY_CONFIG!r}\n'
                "model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', "
                "checkpoint='checkpoints/none.pth')))\n"
            )
        expected = "FishNet pretrained checkpoint 'checkpoints/none.pth' not found"
    elif case == 'missing-ann-file':
        os.remove(osp.join(data, 'annotations', 'instances_train.json'))
        expected = 'instances_train.json'
    elif case == 'missing-images':
        shutil.rmtree(osp.join(data, 'train'))
        expected = 'data_prefix.img'
    elif case == 'bad-config':  # a dict over the base's None, without _delete_
        config = str(tmp_path / 'bad.py')
        with open(config, 'w') as f:
            f.write(f'_base_ = {TINY_CONFIG!r}\nmodel = dict(backbone=dict(init_cfg=dict(a=1)))\n')
        expected = f'the config {config} cannot be read: TypeError: init_cfg='
    else:
        opts += ['model.backbone.arch=fishnet50']
        expected = "cannot be built: KeyError: \"Unknown FishNet arch 'fishnet50'"
    work = Path(tmp_path / 'work')
    proc = run_tool('train.py', config, '--work-dir', str(work), '--cfg-options', *opts)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last_line = _no_traceback_one_line(proc.stderr)
    assert expected in last_line, last_line
    assert not WRONG_CONVERSION.search(last_line), last_line
    assert not work.exists(), sorted(str(p) for p in work.rglob('*'))
