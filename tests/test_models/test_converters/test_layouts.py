"""Other layouts of FishNet weights: the authors' "well-trained" file and pytorchcv's FishNet.

Well-trained: checkpoints in that layout are built here from the reference fixtures' seeded
weights by inverting the six renames of the published third-party loader
(lyakaap/Landmark2019-1st-and-3rd-Place-Solution, ``src/FishNet/fix_checkpoint.py``), written
out below independently of mmfish's own table. Converted, they must give the reference's
outputs (``tests/fixtures/reference``).

pytorchcv: its own ``fishnet99`` / ``fishnet150`` (the pinned test dependency, built with
``pretrained=False``: nothing is downloaded) get seeded weights and norm statistics; their state
dict is converted and mmfish's features 7-10 and logits must equal pytorchcv's. In pytorchcv's
hourglass (``features.hg``) feature 7 is the input of ``down2_seq.unit1`` (the output of
``skip2_seq.unit4``, an identity), features 8 and 9 the inputs of ``down2_seq.unit2`` and
``unit3``, and feature 10 the input of ``features.final_block``: each the concatenation of a
head unit's output with a ``skip2_seq`` transfer.
"""

import importlib.metadata
import sys
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest
import torch

from mmfish.models import FishNet
from mmfish.models.converters import (
    LAYOUTS,
    WELLTRAINED_RENAMES,
    ArchMismatchError,
    CheckpointReadError,
    MissingKeyError,
    NotFishNetCheckpointError,
    ShapeMismatchError,
    UnplacedKeyError,
    convert_checkpoint,
    detect_layout,
    expected_shapes,
    layout_table,
    map_key,
    to_reference_layout,
)
from mmfish.models.converters.convert import convert
from mmfish.testing import (
    REFERENCE_FIXTURES,
    ROOT,
    fixture_tools,
    load_module,
    reference_checkpoint,
    reference_layout,
    relative_error,
    seeded_reference_state_dict,
)

TOOL = Path(ROOT) / 'tools' / 'model_converters' / 'fishnet2mmdet.py'
ARCHS = ('fishnet99', 'fishnet150', 'fishnet201')
MAX_RELATIVE_ERROR = 1e-5
PYTORCHCV_VERSION = '0.0.74'  # requirements/tests-no-deps.txt
PYTORCHCV_INPUT_SHAPE = (1, 3, 224, 224)  # pytorchcv's score pools with AvgPool2d(7)

FIXTURES = Path(REFERENCE_FIXTURES)

# fix_checkpoint.py (FishNet-150 part): well-trained module -> reference module.
PUBLISHED_RENAMES = {
    'fish.fish.3.1.0': 'fish.fish.3.0.2',
    'fish.fish.3.1.1': 'fish.fish.3.0.3',
    'fish.fish.3.1.3': 'fish.fish.3.1',
    'fish.fish.9.4.0': 'fish.fish.9.3.2',
    'fish.fish.9.4.1': 'fish.fish.9.3.3',
    'fish.fish.9.4.4': 'fish.fish.9.4.1',
}


def to_welltrained(reference: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """A reference state dict in the well-trained layout (the published renames, inverted)."""
    inverse = {ref: src for src, ref in PUBLISHED_RENAMES.items()}
    out = OrderedDict()
    for key, value in reference.items():
        module, leaf = key.rsplit('.', 1)
        out[f'{inverse.get(module, module)}.{leaf}'] = value
    assert len(out) == len(reference)
    return out


def welltrained_checkpoint(arch: str, counters: bool = False) -> dict:
    """A ``fishnetXXX_ckpt_welltrained.tar`` dict, by default without ``num_batches_tracked``
    (the loader renames none: the file predates them)."""
    reference = seeded_reference_state_dict(arch)
    if not counters:
        reference = OrderedDict(
            (k, v) for k, v in reference.items() if not k.endswith('num_batches_tracked')
        )
    return reference_checkpoint(to_welltrained(reference), arch)


def run_tool(monkeypatch, capsys, *args: str) -> Tuple[int, str, str]:
    """The converter tool's ``main`` run in this process (``test_convert.py`` runs it as a
    subprocess): exit status, stdout, stderr."""
    tool = load_module(TOOL, '_fishnet2mmdet')
    monkeypatch.setattr(sys, 'argv', [str(TOOL), *args])
    try:
        tool.main()
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr()
    return status, out, err


def load_converted(dst: Path, arch: str) -> FishNet:
    model = FishNet(
        arch=arch,
        out_indices=(7, 8, 9, 10),
        num_classes=1000,
        init_cfg=dict(type='Pretrained', checkpoint=str(dst)),
    )
    model.init_weights()
    converted = torch.load(dst, map_location='cpu', weights_only=True)['state_dict']
    assert list(model.state_dict()) == list(converted)
    for key, value in model.state_dict().items():
        assert torch.equal(value, converted[key]), key
    return model.eval()


def outputs_of(model: FishNet, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    with torch.no_grad():
        features = model.forward_features(x)[7:]  # raw, as the reference computes them
        logits = model.classify(x)
    return {**{f'feat{i}': f for i, f in zip((7, 8, 9, 10), features)}, 'logits': logits}


# ---------------------------------------------------------------------------- well-trained
@pytest.fixture(scope='module')
def welltrained_files(tmp_path_factory) -> Iterator[Dict[str, Path]]:
    """Per variant, a well-trained-layout checkpoint file (made on first use)."""
    folder = tmp_path_factory.mktemp('welltrained_ckpt')

    class Files(dict):
        def __missing__(self, arch: str) -> Path:
            path = folder / f'{arch}_ckpt_welltrained.tar'
            torch.save(welltrained_checkpoint(arch), path, _use_new_zipfile_serialization=False)
            self[arch] = path
            return path

    yield Files()


def test_published_renames_are_the_module_table():
    assert dict(WELLTRAINED_RENAMES) == PUBLISHED_RENAMES


def test_welltrained_fishnet150_gives_reference_outputs(welltrained_files, tmp_path):
    src = welltrained_files['fishnet150']
    dst = tmp_path / 'fishnet150_welltrained_mmfish.pth'
    meta = convert_checkpoint(str(src), str(dst), keep_score=True)
    assert meta == dict(
        arch='fishnet150',
        layout='welltrained',
        source=src.name,
        with_score=True,
        num_classes=1000,
    )
    model = load_converted(dst, 'fishnet150')
    x = torch.from_numpy(np.load(FIXTURES / 'input.npy'))
    expected = np.load(FIXTURES / 'fishnet150_outputs.npz')
    errors = {
        name: relative_error(out, expected[name]) for name, out in outputs_of(model, x).items()
    }
    print(f'fishnet150 well-trained layout, relative errors: {errors}')
    assert max(errors.values()) <= MAX_RELATIVE_ERROR, errors


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('counters', [False, True])
def test_welltrained_layout_converts_like_reference(arch, counters):
    """The renamed file converts to exactly the tensors of the reference-layout file."""
    reference = seeded_reference_state_dict(arch)
    welltrained = welltrained_checkpoint(arch, counters=counters)['state_dict']
    assert detect_layout(welltrained) == 'welltrained'
    renamed, layout = to_reference_layout(welltrained)
    assert layout == 'welltrained'
    assert set(renamed) == {k for k in reference if counters or 'num_batches_tracked' not in k}
    expected = convert(reference, keep_score=True)
    got = convert(welltrained, keep_score=True)
    assert list(got) == list(expected)
    for key, value in got.items():
        if counters or not key.endswith('num_batches_tracked'):
            assert torch.equal(value, expected[key]), key


def test_cli_names_the_welltrained_layout(welltrained_files, tmp_path, monkeypatch, capsys):
    dst = tmp_path / 'out.pth'
    status, out, err = run_tool(monkeypatch, capsys, str(welltrained_files['fishnet150']), str(dst))
    assert status == 0, err
    assert 'fishnet150' in out and 'well-trained' in out, out
    assert torch.load(dst, weights_only=True)['meta']['layout'] == 'welltrained'


def test_welltrained_missing_key_named_in_its_layout():
    state_dict = welltrained_checkpoint('fishnet150')['state_dict']
    del state_dict['module.fish.fish.3.1.1.running_var']
    with pytest.raises(MissingKeyError, match=r'fish\.fish\.3\.1\.1\.running_var') as info:
        convert(state_dict)
    assert info.value.keys == ['fish.fish.3.1.1.running_var']
    # The classifier is needed only when kept; then it is named as the file names it.
    state_dict = welltrained_checkpoint('fishnet150')['state_dict']
    del state_dict['module.fish.fish.9.4.4.bias']
    assert 'score.fc.weight' not in convert(state_dict)
    with pytest.raises(MissingKeyError, match=r'fish\.fish\.9\.4\.4\.bias.*fishnet150') as info:
        convert(state_dict, keep_score=True)
    assert info.value.keys == ['fish.fish.9.4.4.bias']


def test_mixed_layouts_are_refused():
    """A reference file with one well-trained key, or the reverse: nothing is guessed."""
    state_dict = welltrained_checkpoint('fishnet150')['state_dict']
    state_dict['module.fish.fish.3.0.2.weight'] = state_dict['module.fish.fish.3.1.0.weight']
    with pytest.raises(UnplacedKeyError, match=r'fish\.fish\.3\.0\.2\.weight') as info:
        convert(state_dict)
    assert info.value.keys == ['fish.fish.3.0.2.weight']

    reference = seeded_reference_state_dict('fishnet99')
    reference['fish.fish.9.4.4.weight'] = reference['fish.fish.9.4.1.weight']
    with pytest.raises(UnplacedKeyError, match='well-trained'):
        convert(reference)


def test_welltrained_shape_mismatch_named_in_its_layout():
    state_dict = welltrained_checkpoint('fishnet150')['state_dict']
    state_dict['module.fish.fish.3.1.3.weight'] = torch.zeros(1024, 128, 1, 1)
    with pytest.raises(ShapeMismatchError, match=r'fish\.fish\.3\.1\.3\.weight') as info:
        convert(state_dict)
    assert info.value.keys == ['fish.fish.3.1.3.weight']


def test_welltrained_fishnet201_layout_is_refused(tmp_path):
    """The FishNet-201 file as the loader describes it has no exact mapping."""
    state_dict = seeded_reference_state_dict('fishnet201')
    state_dict['fish.fish.0.0.0.shortcut.weight'] = state_dict.pop(
        'fish.fish.0.0.0.shortcut.2.weight'
    )
    for leaf in ('weight', 'bias', 'running_mean', 'running_var'):
        state_dict[f'fish.fish.9.2.0.{leaf}'] = state_dict.pop(f'fish.fish.9.3.0.{leaf}')
    path = tmp_path / 'fishnet201_ckpt_welltrain.tar'
    torch.save({'state_dict': state_dict}, path)
    with pytest.raises(UnplacedKeyError, match='FishNet-201') as info:
        convert_checkpoint(str(path), str(tmp_path / 'out.pth'))
    assert 'fish.fish.0.0.0.shortcut.weight' in info.value.keys
    assert not (tmp_path / 'out.pth').exists()


@pytest.mark.parametrize('layout', LAYOUTS)
@pytest.mark.parametrize('arch', ARCHS)
def test_layout_tables_are_one_to_one(layout, arch):
    reference_keys = [key for key, _, _ in reference_layout(arch)['layout']]
    table = layout_table(layout, arch)
    assert sorted(table.values()) == sorted(reference_keys)
    assert len(set(table)) == len(table)


# ------------------------------------------------------------------------------- pytorchcv
def pytorchcv_module(name: str) -> ModuleType:
    """``pytorchcv.models.<name>``, imported alone (pytorchcv's model_provider would import
    every model, one of which needs torchvision; fishnet and resnet need only torch)."""
    try:
        version = importlib.metadata.version('pytorchcv')
        module = importlib.import_module(f'pytorchcv.models.{name}')
    except ImportError as error:
        pytest.fail(
            f'pytorchcv=={PYTORCHCV_VERSION} is a test dependency: make setup installs it '
            f'(pip install --no-deps -r requirements/tests-no-deps.txt). ({error})'
        )
    assert version == PYTORCHCV_VERSION, f'pytorchcv {version}, the tests pin {PYTORCHCV_VERSION}'
    return module


def seeded_pytorchcv_state_dict(
    net: torch.nn.Module, seed: int
) -> 'OrderedDict[str, torch.Tensor]':
    """Every tensor of pytorchcv's state dict, norm statistics included, by the fixtures' rule
    (the residual branch's last conv, ``body.conv3.conv.weight`` there, scaled down too)."""
    layout = [
        (key, list(value.shape), 'int64' if value.dtype == torch.int64 else 'float32')
        for key, value in net.state_dict().items()
    ]
    state_dict = fixture_tools().seeded_state_dict(layout, seed)
    for key in state_dict:
        if key.endswith('.body.conv3.conv.weight'):
            state_dict[key] = state_dict[key] * fixture_tools().RESIDUAL_GAIN
    return state_dict


@pytest.fixture(scope='module')
def pytorchcv_runs(tmp_path_factory) -> Iterator[Dict[str, Tuple[Path, Dict[str, np.ndarray]]]]:
    """Per variant: pytorchcv's seeded state dict saved as a file, and pytorchcv's outputs."""
    folder = tmp_path_factory.mktemp('pytorchcv')
    fishnet = pytorchcv_module('fishnet')
    seeds = {'fishnet99': 99, 'fishnet150': 150}
    x = torch.from_numpy(fixture_tools().seeded_input(PYTORCHCV_INPUT_SHAPE))

    class Runs(dict):
        def __missing__(self, arch: str) -> Tuple[Path, Dict[str, np.ndarray]]:
            torch.manual_seed(0)
            net = getattr(fishnet, arch)(pretrained=False)
            net.load_state_dict(seeded_pytorchcv_state_dict(net, seeds[arch]))
            net.eval()
            hourglass = net.features.hg
            taps = [*hourglass.down2_seq, net.features.final_block]  # inputs: features 7..10
            captured: List[torch.Tensor] = []
            hooks = [
                tap.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0].clone()))
                for tap in taps
            ]
            with torch.no_grad():
                logits = net(x)
            for hook in hooks:
                hook.remove()
            outputs = {f'feat{i}': f.numpy() for i, f in zip((7, 8, 9, 10), captured)}
            outputs['logits'] = logits.numpy()
            path = folder / f'{arch}-pytorchcv.pth'
            torch.save(net.state_dict(), path)
            self[arch] = (path, outputs)
            return self[arch]

    yield Runs()


@pytest.mark.parametrize('arch', ('fishnet99', 'fishnet150'))
def test_pytorchcv_table_is_pytorchcv_state_dict(arch):
    """Every tensor of pytorchcv's network has exactly one reference key, of the same shape."""
    net = getattr(pytorchcv_module('fishnet'), arch)(pretrained=False)
    table = layout_table('pytorchcv', arch)
    assert sorted(table) == sorted(net.state_dict())
    shapes = expected_shapes(arch, 1000)
    for key, value in net.state_dict().items():
        assert tuple(value.shape) == shapes[map_key(table[key])], key


@pytest.mark.parametrize('arch', ('fishnet99', 'fishnet150'))
def test_pytorchcv_weights_give_pytorchcv_outputs(arch, pytorchcv_runs, tmp_path):
    src, expected = pytorchcv_runs[arch]
    dst = tmp_path / f'{arch}_pytorchcv_mmfish.pth'
    meta = convert_checkpoint(str(src), str(dst), keep_score=True)
    assert meta['arch'] == arch and meta['layout'] == 'pytorchcv' and meta['num_classes'] == 1000
    model = load_converted(dst, arch)
    x = torch.from_numpy(fixture_tools().seeded_input(PYTORCHCV_INPUT_SHAPE))
    errors = {
        name: relative_error(out, expected[name]) for name, out in outputs_of(model, x).items()
    }
    print(f'{arch} pytorchcv layout, relative errors: {errors}')
    assert max(errors.values()) <= MAX_RELATIVE_ERROR, errors


def test_cli_names_the_pytorchcv_layout(pytorchcv_runs, tmp_path, monkeypatch, capsys):
    src, _ = pytorchcv_runs['fishnet99']
    args = (str(src), str(tmp_path / 'out.pth'), '--arch', 'fishnet99')
    status, out, err = run_tool(monkeypatch, capsys, *args)
    assert status == 0, err
    assert 'fishnet99' in out and 'pytorchcv' in out, out


def test_pytorchcv_shape_mismatch_named_in_its_layout(pytorchcv_runs):
    state_dict = torch.load(pytorchcv_runs['fishnet99'][0], weights_only=True)
    key = 'features.hg.skip1_seq.unit4.se.conv1.weight'
    state_dict[key] = torch.zeros(16, 1024, 1, 1)
    with pytest.raises(ShapeMismatchError, match=key.replace('.', r'\.')) as info:
        convert(state_dict)
    assert info.value.keys == [key]


# ---------------------------------------------------------------------- bad input: no file
def test_pytorchcv_model_that_is_not_fishnet(tmp_path):
    resnet = pytorchcv_module('resnet').resnet18(pretrained=False)
    src = tmp_path / 'resnet18-pytorchcv.pth'
    torch.save(resnet.state_dict(), src)
    dst = tmp_path / 'out.pth'
    with pytest.raises(NotFishNetCheckpointError, match='pytorchcv.*other than FishNet'):
        convert_checkpoint(str(src), str(dst))
    assert not dst.exists()


def test_one_variant_converted_as_another(
    pytorchcv_runs, welltrained_files, tmp_path, monkeypatch, capsys
):
    dst = tmp_path / 'out.pth'
    args = (str(pytorchcv_runs['fishnet99'][0]), str(dst), '--arch', 'fishnet150')
    status, out, err = run_tool(monkeypatch, capsys, *args)
    assert status == 1, out
    assert 'ArchMismatchError' in err and 'fishnet99' in err
    with pytest.raises(ArchMismatchError, match='fishnet150'):
        convert_checkpoint(str(welltrained_files['fishnet150']), str(dst), arch='fishnet201')
    assert not dst.exists()


@pytest.mark.parametrize('source', ['pytorchcv', 'welltrained'])
def test_truncated_files(source, pytorchcv_runs, welltrained_files, tmp_path):
    full = (
        pytorchcv_runs['fishnet99'][0] if source == 'pytorchcv' else welltrained_files['fishnet99']
    )
    src = tmp_path / full.name
    data = full.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    dst = tmp_path / 'out.pth'
    with pytest.raises(CheckpointReadError, match='truncated or corrupt'):
        convert_checkpoint(str(src), str(dst))
    assert not dst.exists()


def test_failed_write_leaves_no_file(welltrained_files, tmp_path, monkeypatch):
    """A write that fails halfway (disk full, interrupt) leaves neither a partial nor a temp file,
    and an existing output untouched."""
    src = welltrained_files['fishnet99']  # made before torch.save is broken
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        with open(f, 'wb') as out:
            out.write(b'PK\x03\x04 partial')
        raise OSError('No space left on device')

    monkeypatch.setattr(torch, 'save', failing_save)
    dst = tmp_path / 'out.pth'
    with pytest.raises(OSError, match='No space'):
        convert_checkpoint(str(src), str(dst))
    assert list(tmp_path.iterdir()) == []
    dst.write_bytes(b'previous')
    with pytest.raises(OSError):
        convert_checkpoint(str(src), str(dst))
    assert dst.read_bytes() == b'previous' and list(tmp_path.iterdir()) == [dst]
    monkeypatch.setattr(torch, 'save', real_save)
    convert_checkpoint(str(src), str(dst))
    assert torch.load(dst, weights_only=True)['meta']['layout'] == 'welltrained'
