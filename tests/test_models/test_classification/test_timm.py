"""FishNet as timm models: created by name after ``import mmfish``, loading the converter's
``--keep-score`` file from a local path, with the reference's logits and the mmdet backbone's
features."""

import os.path as osp

import numpy as np
import pytest
import timm
import torch

import mmfish  # noqa: F401  (registers the timm models)
from mmfish.models import FishNet
from mmfish.models.classification.timm_models import TIMM_FEATURES, TimmFishNet
from mmfish.models.converters import convert_checkpoint
from mmfish.testing import REFERENCE_FIXTURES, relative_error

MAX_RELATIVE_ERROR = 1e-5


@pytest.fixture(scope='module')
def keep_score_files(source_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp('timm')
    files = {}
    for arch in ('fishnet99', 'fishnet150'):
        files[arch] = str(folder / f'{arch}_in1k_timm.pth')
        convert_checkpoint(str(source_files[arch]), files[arch], keep_score=True)
    return files


def reference_input() -> torch.Tensor:
    return torch.from_numpy(np.load(osp.join(REFERENCE_FIXTURES, 'input.npy')))


def reference_outputs(arch: str):
    return np.load(osp.join(REFERENCE_FIXTURES, f'{arch}_outputs.npz'))


def test_every_variant_is_a_timm_model():
    names = timm.list_models('fish*')
    assert set(names) >= {'fishnet99', 'fishnet150', 'fishnet201', 'fishnext150'}
    assert set(timm.list_pretrained('fishnet150*')) == {
        'fishnet150.pytorchcv_in1k',
        'fishnet150.in1k',
        'fishnet150.welltrained_in1k',
    }
    # The untagged name takes pytorchcv's file, the strongest published start.
    cfg = timm.create_model('fishnet150').pretrained_cfg
    assert cfg['tag'] == 'pytorchcv_in1k'
    assert cfg['file'] == 'checkpoints/fishnet150_pytorchcv_in1k_timm.pth'


@pytest.mark.parametrize('arch', ['fishnet99', 'fishnet150'])
def test_pretrained_logits_are_the_reference(arch, keep_score_files):
    model = timm.create_model(
        arch, pretrained=True, pretrained_cfg_overlay=dict(file=keep_score_files[arch])
    )
    assert isinstance(model, TimmFishNet)
    model.eval()
    x = reference_input()
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
    error = relative_error(logits, reference_outputs(arch)['logits'])
    print(f'{arch} timm logits relative error {error:.2e}')
    assert error <= MAX_RELATIVE_ERROR
    assert features.shape == (1, model.num_features, 2, 3)
    assert pre_logits.shape == (1, model.head_hidden_size)
    assert model.get_classifier() is model.score.fc


def test_same_weights_and_features_as_the_mmdet_backbone(keep_score_files):
    """features_only at timm's indices 1-4 = mmdet's FishNet at out_indices 7-10 without out
    norms, both loaded from the same file, whose keys the timm model has as they are."""
    path = keep_score_files['fishnet150']
    timm_model = timm.create_model(
        'fishnet150', pretrained=True, pretrained_cfg_overlay=dict(file=path)
    )
    state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    timm_keys = set(timm_model.state_dict())
    assert timm_keys == {k for k in state if not k.startswith('out_norms.')}

    features_model = timm.create_model(
        'fishnet150',
        pretrained=True,
        pretrained_cfg_overlay=dict(file=path),
        features_only=True,
        out_indices=(1, 2, 3, 4),
    )
    info = features_model.feature_info
    assert info.channels() == [320, 832, 1600, 2112]
    assert info.reduction() == [4, 8, 16, 32]
    assert info.module_name() == ['body.2', 'head.0', 'head.1', 'head.2']

    backbone = FishNet(
        'fishnet150',
        out_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=path),
    )
    backbone.init_weights()
    backbone.eval()
    features_model.eval()
    x = reference_input()
    with torch.no_grad():
        expected = backbone(x)
        actual = features_model(x)
    assert len(actual) == 4
    for a, e in zip(actual, expected):
        assert a.is_contiguous()
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_feature_info_follows_timm_rules():
    model = timm.create_model('fishnet99', features_only=True)
    assert model.feature_info.reduction() == [4, 4, 8, 16, 32][1:]  # default out_indices 1-4
    full = TimmFishNet('fishnet99').feature_info
    assert [f['reduction'] for f in full] == [4, 4, 8, 16, 32]
    assert len(full) == len(TIMM_FEATURES)
    x = torch.rand(2, 3, 64, 64)
    model.eval()
    shapes = [tuple(f.shape) for f in model(x)]
    assert shapes == [(2, 320, 16, 16), (2, 832, 8, 8), (2, 1600, 4, 4), (2, 2112, 2, 2)]


def test_new_number_of_classes():
    model = timm.create_model('fishnext150', num_classes=10)
    model.eval()
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 10)
    model.reset_classifier(0)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, model.head_hidden_size)


def test_detection_file_without_score_head_is_refused(source_files, tmp_path):
    path = str(tmp_path / 'fishnet99_in1k_mmfish.pth')
    convert_checkpoint(str(source_files['fishnet99']), path)  # for detection: no score head
    with pytest.raises(ValueError, match='--keep-score'):
        timm.create_model('fishnet99', pretrained=True, pretrained_cfg_overlay=dict(file=path))


def test_no_published_weights_say_so():
    with pytest.raises(RuntimeError, match='No pretrained weights exist for fishnet201'):
        timm.create_model('fishnet201', pretrained=True)
