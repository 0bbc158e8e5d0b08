"""A whole model's checkpoint of another FishNet variant than the config's is refused before
anything is loaded or written (mmengine would load it in part and go on)."""

import pytest
from mmengine.config import Config

from mmfish.models.backbones.model_checkpoint import (
    CheckpointVariantError,
    check_model_checkpoint,
)
from mmfish.models.converters import convert_checkpoint
from mmfish.testing import ROOT

CONFIG = f'{ROOT}/configs/classification/fishnet150_8xb32_in1k.py'


def test_converted_classifier_of_another_variant(source_files, tmp_path):
    path = tmp_path / 'fishnet99_in1k_mmpretrain.pth'
    convert_checkpoint(str(source_files['fishnet99']), str(path), classifier=True)
    cfg = Config.fromfile(CONFIG)
    with pytest.raises(CheckpointVariantError) as error:
        check_model_checkpoint(cfg, str(path), CONFIG)
    message = str(error.value)
    assert "holds a FishNet 'fishnet99' model, but the config builds 'fishnet150'" in message
    assert 'fishnet99_8xb32_in1k.py' in message
    # Its own variant passes.
    check_model_checkpoint(Config.fromfile(CONFIG.replace('150', '99')), str(path), CONFIG)


def test_trained_checkpoint_told_by_its_blocks(source_files, tmp_path):
    """A checkpoint without the converter's meta (one that mmengine saved) by its block counts."""
    import torch

    path = tmp_path / 'converted.pth'
    convert_checkpoint(str(source_files['fishnet201']), str(path), classifier=True)
    state = torch.load(path, weights_only=True)['state_dict']
    trained = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': state}, trained)
    with pytest.raises(CheckpointVariantError, match="'fishnet201' model"):
        check_model_checkpoint(Config.fromfile(CONFIG), str(trained), CONFIG)
