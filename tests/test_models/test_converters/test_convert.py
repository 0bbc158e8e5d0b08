"""The reference-checkpoint converter, and proof that mmfish's FishNet is the reference network.

The fixtures in ``tests/fixtures/reference`` hold, for each variant, the reference's state dict
layout and its outputs (features 7..10 and logits) for seeded weights and a fixed input; see
their README. Here the reference-format checkpoint is rebuilt from the layout and the seed
(without the reference code), converted, loaded into mmfish's ``FishNet`` through mmengine's
``Pretrained`` init, and run: the outputs must be the reference's.
"""

import argparse
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import mmengine.runner.checkpoint as mmengine_checkpoint
import numpy as np
import pytest
import torch

from mmfish.models import FishNet
from mmfish.models.converters import (
    ArchMismatchError,
    CheckpointReadError,
    FishNetConversionError,
    MissingKeyError,
    NotFishNetCheckpointError,
    ShapeMismatchError,
    UnplacedKeyError,
    convert_checkpoint,
    detect_arch,
    load_reference_checkpoint,
    map_key,
)
from mmfish.models.converters.convert import convert
from mmfish.testing import (
    REFERENCE_FIXTURES,
    ROOT,
    LoadSpy,
    load_module,
    reference_layout,
    relative_error,
)

FIXTURES = Path(REFERENCE_FIXTURES)
TOOL = Path(ROOT) / 'tools' / 'model_converters' / 'fishnet2mmdet.py'
ARCHS = ('fishnet99', 'fishnet150', 'fishnet201')
MAX_RELATIVE_ERROR = 1e-5


# ------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize('arch', ARCHS)
def test_converted_reference_weights_give_reference_outputs(
    arch, source_files, tmp_path, monkeypatch
):
    src = source_files[arch]
    dst = tmp_path / f'{arch}_mmfish.pth'
    meta = convert_checkpoint(str(src), str(dst), keep_score=True)
    assert meta == dict(
        arch=arch, layout='reference', source=src.name, with_score=True, num_classes=1000
    )

    spy = LoadSpy(monkeypatch)
    model = FishNet(
        arch=arch,
        out_indices=(7, 8, 9, 10),
        num_classes=1000,
        init_cfg=dict(type='Pretrained', checkpoint=str(dst)),
    )
    model.init_weights()
    assert spy.missing == [] and spy.unexpected == []
    # The values were loaded, not just the names matched.
    converted = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(value, converted[key]), key

    model.eval()
    x = torch.from_numpy(np.load(FIXTURES / 'input.npy'))
    expected = np.load(FIXTURES / f'{arch}_outputs.npz')
    with torch.no_grad():
        features = model.forward_features(x)[7:]  # raw, as the reference computes them
        logits = model.classify(x)
    errors = {
        f'feat{i}': relative_error(f, expected[f'feat{i}']) for i, f in zip((7, 8, 9, 10), features)
    }
    errors['logits'] = relative_error(logits, expected['logits'])
    print(f'{arch} relative errors: {errors}')
    assert max(errors.values()) <= MAX_RELATIVE_ERROR, errors


def test_cli_matches_function(source_files, tmp_path):
    src = source_files['fishnet99']
    from_function = tmp_path / 'function.pth'
    from_cli = tmp_path / 'cli.pth'
    convert_checkpoint(str(src), str(from_function), keep_score=True)
    result = subprocess.run(
        [sys.executable, str(TOOL), str(src), str(from_cli), '--keep-score', '--arch', 'fishnet99'],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stderr
    assert 'fishnet99' in result.stdout
    a = torch.load(from_function, map_location='cpu', weights_only=True)
    b = torch.load(from_cli, map_location='cpu', weights_only=True)
    assert a['meta'] == b['meta']
    assert list(a['state_dict']) == list(b['state_dict'])
    assert all(torch.equal(a['state_dict'][k], b['state_dict'][k]) for k in a['state_dict'])

    # A failure: exit status 1 and the reason on stderr, no traceback.
    bad = subprocess.run(
        [sys.executable, str(TOOL), str(src), str(tmp_path / 'x.pth'), '--arch', 'fishnet150'],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
    )
    assert bad.returncode == 1
    assert 'ArchMismatchError' in bad.stderr and 'fishnet99' in bad.stderr
    assert 'Traceback' not in bad.stderr
    assert not (tmp_path / 'x.pth').exists()


def test_tool_convert_function_drops_score(source_files):
    tool = load_module(TOOL, '_fishnet2mmdet')
    state_dict = torch.load(source_files['fishnet99'], weights_only=True)['state_dict']
    converted = tool.convert(state_dict)
    assert isinstance(converted, OrderedDict)
    assert not any(k.startswith('score.') for k in converted)
    assert list(converted) == list(FishNet('fishnet99').state_dict())


def test_detection_build_loads_drop_score_file(source_files, tmp_path, monkeypatch):
    """The detection build (out_norm, no score) finds every key, its out norms included."""
    dst = tmp_path / 'fishnet99_det.pth'
    meta = convert_checkpoint(str(source_files['fishnet99']), str(dst))
    assert meta['with_score'] is False and meta['num_classes'] is None
    saved = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    assert not any(k.startswith('score.') for k in saved)

    spy = LoadSpy(monkeypatch)
    model = FishNet(arch='fishnet99', init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    assert model.out_norms is not None and model.score is None
    model.init_weights()
    assert spy.missing == [] and spy.unexpected == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # mmengine's strict load agrees.
    mmengine_checkpoint.load_checkpoint(FishNet(arch='fishnet99'), str(dst), strict=True)


def test_bare_state_dict_without_module_prefix(source_files, tmp_path):
    checkpoint = torch.load(source_files['fishnet99'], weights_only=True)
    bare = OrderedDict((k[len('module.') :], v) for k, v in checkpoint['state_dict'].items())
    path = tmp_path / 'bare.pth'
    torch.save(bare, path)
    assert list(load_reference_checkpoint(str(path))) == list(bare)
    expected = convert(checkpoint['state_dict'], keep_score=True)
    got = convert(bare, keep_score=True)
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in got)
    # A bare state dict with the prefix works as well.
    torch.save(checkpoint['state_dict'], path)
    assert list(load_reference_checkpoint(str(path))) == list(bare)


def test_legacy_serialization(source_files, tmp_path):
    """The reference files predate PyTorch 1.6: the legacy (non-zip) format loads too."""
    checkpoint = torch.load(source_files['fishnet99'], weights_only=True)
    path = tmp_path / 'legacy_ckpt.tar'
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    assert not path.read_bytes().startswith(b'PK')
    loaded = load_reference_checkpoint(str(path))
    assert list(loaded) == [k[len('module.') :] for k in checkpoint['state_dict']]
    assert list(convert(loaded)) == list(convert(checkpoint['state_dict']))
    truncated = tmp_path / 'legacy_truncated.tar'
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointReadError, match='truncated or corrupt'):
        load_reference_checkpoint(str(truncated))


def test_old_checkpoints_without_num_batches_tracked(source_files):
    state_dict = torch.load(source_files['fishnet99'], weights_only=True)['state_dict']
    old = OrderedDict((k, v) for k, v in state_dict.items() if 'num_batches_tracked' not in k)
    converted = convert(old)
    counters = [k for k in converted if k.endswith('num_batches_tracked')]
    assert counters and all(int(converted[k]) == 0 for k in counters)
    assert list(converted) == list(FishNet('fishnet99').state_dict())


# -------------------------------------------------------------------------- key mapping
@pytest.mark.parametrize('arch', ARCHS)
def test_detect_arch_and_every_key_placed(arch):
    keys = [key for key, _, _ in reference_layout(arch)['layout']]
    assert detect_arch({k: torch.empty(0) for k in keys}) == arch
    assert detect_arch({f'module.{k}': torch.empty(0) for k in keys}) == arch
    mapped = [map_key(k) for k in keys]
    assert None not in mapped
    assert len(set(mapped)) == len(mapped)
    model_keys = set(FishNet(arch, out_norm=False, num_classes=1000).state_dict())
    assert set(mapped) == model_keys


@pytest.mark.parametrize(
    'reference, mmfish',
    [
        ('conv1.0.weight', 'stem.0.weight'),
        ('conv2.1.running_var', 'stem.4.running_var'),
        ('conv3.0.weight', 'stem.6.weight'),
        ('fish.fish.1.0.0.shortcut.2.weight', 'tail.1.blocks.0.projection.2.weight'),
        ('fish.fish.3.0.3.bias', 'bridge.squeeze.3.bias'),
        ('fish.fish.3.1.weight', 'bridge.squeeze.5.weight'),
        ('fish.fish.3.2.1.bn3.weight', 'bridge.blocks.1.norm3.weight'),
        ('fish.fish.3.3.0.5.bias', 'bridge.attention.5.bias'),
        ('fish.fish.5.1.0.conv2.weight', 'body.1.transfer.0.conv2.weight'),
        ('fish.fish.6.0.1.bn1.running_mean', 'body.2.blocks.1.norm1.running_mean'),
        ('fish.fish.9.1.3.conv3.weight', 'head.2.transfer.3.conv3.weight'),
        ('fish.fish.9.3.2.weight', 'score.conv.2.weight'),
        ('fish.fish.9.4.1.bias', 'score.fc.bias'),
        ('fish.fish.3.1.0.weight', None),
        ('fish.fish.2.1.0.bn1.weight', None),
        ('fc.weight', None),
    ],
)
def test_map_key(reference, mmfish):
    assert map_key(reference) == mmfish


# -------------------------------------------------------------------------------- errors
@pytest.fixture(scope='module')
def fishnet99_state_dict(source_files) -> 'OrderedDict[str, torch.Tensor]':
    return torch.load(source_files['fishnet99'], weights_only=True)['state_dict']


def test_errors_are_value_errors():
    for error in (
        ArchMismatchError,
        CheckpointReadError,
        MissingKeyError,
        NotFishNetCheckpointError,
        ShapeMismatchError,
        UnplacedKeyError,
    ):
        assert issubclass(error, FishNetConversionError) and issubclass(error, ValueError)


def test_unplaceable_keys(fishnet99_state_dict):
    state_dict = OrderedDict(fishnet99_state_dict)
    state_dict['module.fish.fish.2.0.0.attention.weight'] = torch.zeros(3)
    state_dict['module.extra.bias'] = torch.zeros(3)
    with pytest.raises(UnplacedKeyError, match='fish.fish.2.0.0.attention.weight') as info:
        convert(state_dict)
    assert info.value.keys == ['fish.fish.2.0.0.attention.weight', 'extra.bias']


def test_partly_welltrained_layout_is_refused(fishnet99_state_dict):
    """One module in the "well-trained" names, the rest in the reference's: refused, naming the
    keys that the well-trained layout does not have (``test_layouts.py`` has the
    whole layout)."""
    state_dict = OrderedDict(fishnet99_state_dict)
    state_dict['module.fish.fish.3.1.0.weight'] = state_dict.pop('module.fish.fish.3.0.2.weight')
    with pytest.raises(UnplacedKeyError, match='well-trained') as info:
        convert(state_dict)
    assert 'fish.fish.3.0.3.running_var' in info.value.keys
    assert 'fish.fish.3.1.0.weight' not in info.value.keys


def test_extra_block_is_unplaced(fishnet99_state_dict):
    state_dict = OrderedDict(fishnet99_state_dict)
    state_dict['module.fish.fish.0.0.2.conv1.weight'] = torch.zeros(32, 128, 1, 1)
    with pytest.raises(UnplacedKeyError, match='fish.fish.0.0.2.conv1.weight'):
        convert(state_dict)


def test_missing_keys(fishnet99_state_dict):
    state_dict = OrderedDict(fishnet99_state_dict)
    del state_dict['module.fish.fish.2.0.3.conv2.weight']
    del state_dict['module.fish.fish.3.3.0.0.running_var']
    with pytest.raises(MissingKeyError, match='fish.fish.2.0.3.conv2.weight') as info:
        convert(state_dict)
    assert sorted(info.value.keys) == [
        'fish.fish.2.0.3.conv2.weight',
        'fish.fish.3.3.0.0.running_var',
    ]
    # The score head is required only when kept.
    state_dict = OrderedDict(fishnet99_state_dict)
    for key in [k for k in state_dict if k.startswith('module.fish.fish.9.4.')]:
        del state_dict[key]
    convert(state_dict)
    with pytest.raises(MissingKeyError, match='fish.fish.9.4.1.weight'):
        convert(state_dict, keep_score=True)


def test_missing_block_names_closest_variant(fishnet99_state_dict):
    state_dict = OrderedDict(
        (k, v)
        for k, v in fishnet99_state_dict.items()
        if not k.startswith('module.fish.fish.2.0.5.')
    )
    with pytest.raises(MissingKeyError, match=r'fish\.fish\.2\.0\.5\.bn1\.weight.*fishnet99'):
        convert(state_dict)


def test_shape_mismatch(fishnet99_state_dict):
    state_dict = OrderedDict(fishnet99_state_dict)
    state_dict['module.fish.fish.7.1.0.conv1.weight'] = torch.zeros(5, 512, 1, 1)
    with pytest.raises(ShapeMismatchError, match=r'fish\.fish\.7\.1\.0\.conv1\.weight') as info:
        convert(state_dict)
    assert info.value.keys == ['fish.fish.7.1.0.conv1.weight']


def test_arch_mismatch(fishnet99_state_dict, source_files, tmp_path):
    with pytest.raises(ArchMismatchError, match='fishnet99'):
        convert(fishnet99_state_dict, arch='fishnet150')
    with pytest.raises(ArchMismatchError):
        convert_checkpoint(
            str(source_files['fishnet99']), str(tmp_path / 'x.pth'), arch='fishnet201'
        )
    assert convert(fishnet99_state_dict, arch='fishnet99')


def test_truncated_file(source_files, tmp_path):
    data = source_files['fishnet99'].read_bytes()
    path = tmp_path / 'truncated_ckpt.tar'
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match='truncated or corrupt'):
        load_reference_checkpoint(str(path))
    with pytest.raises(CheckpointReadError):
        convert_checkpoint(str(path), str(tmp_path / 'out.pth'))
    assert not (tmp_path / 'out.pth').exists()
    empty = tmp_path / 'empty.tar'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointReadError, match='empty'):
        load_reference_checkpoint(str(empty))


def test_foreign_files(tmp_path):
    # A ResNet-style state dict.
    resnet = OrderedDict(
        [
            ('conv1.weight', torch.zeros(64, 3, 7, 7)),
            ('bn1.weight', torch.ones(64)),
            ('layer1.0.conv1.weight', torch.zeros(64, 64, 1, 1)),
            ('fc.weight', torch.zeros(1000, 2048)),
        ]
    )
    path = tmp_path / 'resnet50.pth'
    torch.save({'state_dict': resnet, 'meta': {}}, path)
    with pytest.raises(NotFishNetCheckpointError, match='conv1.weight'):
        convert(load_reference_checkpoint(str(path)))
    # A text file.
    text = tmp_path / 'notes.txt'
    text.write_text('FishNet weights: see the README\n')
    with pytest.raises(NotFishNetCheckpointError, match='not a PyTorch checkpoint'):
        load_reference_checkpoint(str(text))
    # A torch file holding something else than a state dict.
    other = tmp_path / 'list.pth'
    torch.save([torch.zeros(1)], other)
    with pytest.raises(NotFishNetCheckpointError, match='list'):
        load_reference_checkpoint(str(other))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / 'namespace.pth'
    torch.save({'state_dict': {}, 'args': argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointReadError, match='weights_only'):
        load_reference_checkpoint(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_reference_checkpoint(str(tmp_path / 'nowhere.tar'))
    assert not os.path.exists(tmp_path / 'nowhere.tar')
