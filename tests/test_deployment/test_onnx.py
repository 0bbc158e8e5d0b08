"""FishNet and its neck exported to ONNX (mmfish/deployment/onnx.py, tools/deployment/
pytorch2onnx.py): onnxruntime computes what PyTorch does, at sizes other than the traced one, with
the checkpoint's weights; bad input is a one-line error with the fix.

The tests export the tiny FishNet with the TorchScript exporter (under a second); the dynamo
exporter, the tool's default, takes 15-25 s even for the tiny model and is tested once, marked
slow.
"""

import json
import os
import os.path as osp
import sys
from typing import Callable

import numpy as np
import onnx
import pytest
import torch

from mmfish.deployment.onnx import (
    DEFAULT_TOLERANCE,
    INPUT_NAME,
    ExportError,
    build_model,
    check_parity,
    export_onnx,
    load_config,
    parse_shape,
    session,
)
from mmfish.testing import ROOT, TINY_CONFIG, import_tool

# Sizes other than the traced 2x3x224x224: batch 1 and 3, square and not, the smallest (32 px).
SHAPES = [(1, 3, 64, 64), (3, 3, 96, 160), (1, 3, 32, 32)]
NECK_OUTPUTS = ['neck_s4', 'neck_s8', 'neck_s16', 'neck_s32', 'neck_s64']
BACKBONE_OUTPUTS = ['feature7', 'feature8', 'feature9', 'feature10']
UPERNET_CONFIG = osp.join(
    ROOT, 'configs', 'segmentation', 'upernet_fishnet99_4xb4-160k_ade20k-512x512.py'
)


@pytest.fixture(scope='module')
def tiny_cfg():
    return load_config(TINY_CONFIG)


@pytest.fixture(scope='module')
def tiny_detector(tiny_cfg):
    """The tiny Mask R-CNN with its own seeded weights (not the export's seed), eval mode."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    torch.manual_seed(123)
    model = MODELS.build(tiny_cfg.model)
    model.init_weights()
    return model.eval()


@pytest.fixture(scope='module')
def detector_checkpoint(tiny_detector, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp('ckpt') / 'tiny_detector.pth')
    torch.save({'state_dict': tiny_detector.state_dict(), 'meta': {}}, path)
    return path


def dynamic_dims(path: str) -> list:
    """The ONNX input's dimensions: a name where dynamic, a number where fixed."""
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


# ------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize(
    'part, names', [('backbone', BACKBONE_OUTPUTS), ('backbone+neck', NECK_OUTPUTS)]
)
def test_torchscript_export_matches_pytorch(part, names, tiny_cfg, one_thread, tmp_path):
    model = build_model(tiny_cfg, part)
    path = str(tmp_path / 'tiny.onnx')
    info = export_onnx(model, path, exporter='torchscript')
    assert info['outputs'] == names and os.listdir(tmp_path) == ['tiny.onnx']
    dims = dynamic_dims(path)
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3])), dims
    for result in check_parity(model, path, SHAPES):
        assert result.max_error <= DEFAULT_TOLERANCE, result
        assert list(result.errors) == names
        n, _, h, w = result.shape
        assert result.output_shapes[names[0]][:1] == [n]


def test_export_carries_the_checkpoint_weights(
    tiny_cfg, tiny_detector, detector_checkpoint, one_thread, tmp_path
):
    """The ONNX file computes the trained detector's features; the seeded model's differ."""
    model = build_model(tiny_cfg, 'backbone+neck', detector_checkpoint)
    path = str(tmp_path / 'trained.onnx')
    export_onnx(model, path, exporter='torchscript')
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = tiny_detector.neck(tiny_detector.backbone(x))
    got = session(path).run(None, {INPUT_NAME: x.numpy()})
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=0, atol=1e-4 * float(w.abs().max()))
    seeded = build_model(tiny_cfg, 'backbone+neck')
    assert check_parity(seeded, path, [(1, 3, 64, 64)])[0].max_error > 0.01  # the check can fail


def test_a_backbone_checkpoint_exports_the_backbone_only(
    tiny_cfg, tiny_detector, one_thread, tmp_path
):
    path = str(tmp_path / 'backbone.pth')
    torch.save(tiny_detector.backbone.state_dict(), path)  # keys without 'backbone.'
    model = build_model(tiny_cfg, 'backbone', path)
    for name, value in tiny_detector.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], value), name
    with pytest.raises(ExportError, match=r'holds no neck weights: export --part backbone'):
        build_model(tiny_cfg, 'backbone+neck', path)


def test_a_checkpoint_of_another_model_is_refused(tiny_cfg, tiny_detector, tmp_path):
    state = dict(tiny_detector.state_dict())
    state['backbone.stem.0.weight'] = torch.zeros(1, 1, 1, 1)
    assert 'backbone.stem.0.weight' in tiny_detector.state_dict()
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': state}, path)
    with pytest.raises(ExportError, match=r'does not fit .*size mismatch.* give the config'):
        build_model(tiny_cfg, 'backbone+neck', path)


# ------------------------------------------------------------------------------ input sizes
@pytest.mark.parametrize(
    'text, expected',
    [('1x3x224x224', (1, 3, 224, 224)), ('320x480', (1, 3, 320, 480)), ('2x3x800x1216', None)],
)
def test_shapes_parse(text, expected):
    assert parse_shape(text) == (expected or tuple(int(v) for v in text.split('x')))


@pytest.mark.parametrize(
    'text, message',
    [
        ('1x3x225x224', 'height 225 is not a multiple of 32; FishNet needs both sides divisible '
         'by 32: pad the image (e.g. to 1x3x256x224'),
        ('100x60', 'height 100 and width 60 are not multiples of 32; FishNet needs both sides '
         'divisible by 32: pad the image (e.g. to 1x3x128x64'),
        ('1x3x224', 'write NxCxHxW (e.g. 1x3x224x224) or HxW'),
        ('0x3x224x224', 'write NxCxHxW'),
    ],
)  # fmt: skip
def test_bad_shapes_name_the_fix(text, message):
    with pytest.raises(ExportError) as error:
        parse_shape(text)
    assert message in str(error.value)


# --------------------------------------------------------------------------------- the tool
@pytest.fixture
def pytorch2onnx():
    return import_tool('deployment', 'pytorch2onnx')


@pytest.mark.parametrize(
    'args, message',
    [
        (['--check-shapes', '1x3x224x200'], 'input shape 1x3x224x200: width 200 is not a '
         'multiple of 32; FishNet needs both sides divisible by 32: pad the image (e.g. to '
         '1x3x224x224'),
        (['--checkpoint', 'no/such.pth'], 'checkpoint no/such.pth does not exist: give a '
         "trained model's checkpoint"),
        (['--out', 'model.pt'], '--out model.pt: name a .onnx file'),
        (['--onnx', 'no.onnx'], '--onnx no.onnx does not exist: give an exported .onnx file'),
        (['--check-shapes', '1x4x64x64'], '--check-shapes 1x4x64x64: the backbone takes 3 '
         'channels; give NxCxHxW with C=3'),
    ],
    ids=['size', 'checkpoint', 'out', 'onnx', 'channels'],
)  # fmt: skip
def test_tool_refuses_bad_input_in_one_line(
    args, message, pytorch2onnx, monkeypatch, capsys, tmp_path
):
    from mmfish.utils.cli import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['pytorch2onnx.py', TINY_CONFIG, *args])
    with pytest.raises(SystemExit) as exit_:
        run_cli(pytorch2onnx.main)
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f'pytorch2onnx.py: error: ExportError: {message}'), lines[0]
    assert os.listdir(tmp_path) == []  # nothing written


@pytest.mark.parametrize(
    'config, message',
    [
        ('configs/no_such_config.py', 'config configs/no_such_config.py does not exist: give a '
         'config file'),
        (UPERNET_CONFIG, 'has no model.neck: export the backbone alone (--part backbone)'),
    ],
    ids=['missing', 'no-neck'],
)  # fmt: skip
def test_tool_refuses_a_config_it_cannot_export(config, message, pytorch2onnx, tmp_path):
    with pytest.raises(ExportError) as error:
        pytorch2onnx.main([config, '--out', str(tmp_path / 'x.onnx')])
    assert message in str(error.value)
    assert os.listdir(tmp_path) == []


def test_tool_fails_when_parity_fails(pytorch2onnx, one_thread, capsys, tmp_path):
    """Held to an impossible tolerance, the tool prints the table and exits with status 1 (here
    checking the file it wrote, ``--onnx``, instead of exporting again)."""
    out = tmp_path / 'tiny.onnx'
    argv = [TINY_CONFIG, '--out', str(out), '--exporter', 'torchscript', '--threads', '1']
    report = pytorch2onnx.main([*argv, '--check-shapes', '64x64', '2x3x64x128'])
    assert [p['shape'] for p in report['parity']] == [[1, 3, 64, 64], [2, 3, 64, 128]]
    assert max(p['max_error'] for p in report['parity']) <= DEFAULT_TOLERANCE
    with pytest.raises(SystemExit) as exit_:
        pytorch2onnx.main(
            [*argv, '--onnx', str(out), '--check-shapes', '64x64', '--tolerance', '1e-12']
        )
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    assert f'Checking {out} against backbone+neck' in captured.out
    assert '| 1x3x64x64 |' in captured.out
    assert 'parity FAILED: relative error' in captured.err and '> 1e-12' in captured.err


# ------------------------------------------------------------------------ the dynamo exporter
@pytest.mark.slow  # about 20 s on an idle machine (2 minutes under load): the dynamo exporter
def test_dynamo_export_of_the_backbone_matches_pytorch(tiny_cfg, one_thread, capfd, tmp_path):
    model = build_model(tiny_cfg, 'backbone')
    path = str(tmp_path / 'tiny.onnx')
    info = export_onnx(model, path, exporter='dynamo')
    assert info['exporter'] == 'dynamo' and info['outputs'] == BACKBONE_OUTPUTS
    assert os.listdir(tmp_path) == ['tiny.onnx']  # one file: no external data
    assert 'torchvision' not in capfd.readouterr().err  # its irrelevant warnings are silenced
    dims = dynamic_dims(path)
    assert isinstance(dims[0], str) and dims[1] == 3, dims
    assert '32' in dims[2] and '32' in dims[3], dims  # 32 * height_div32, 32 * width_div32
    for result in check_parity(model, path, SHAPES):
        assert result.max_error <= DEFAULT_TOLERANCE, result


@pytest.mark.slow  # about 15 s on an idle machine: the tool in a subprocess, end to end
def test_tool_exports_checks_and_times_backbone_and_neck(run_tool: Callable, tmp_path):
    out, report = tmp_path / 'tiny.onnx', tmp_path / 'report.json'
    proc = run_tool(
        'deployment/pytorch2onnx.py', TINY_CONFIG, '--out', str(out), '--out-json', str(report),
        '--check-shapes', '1x3x64x64', '3x3x96x160', '--benchmark', '--repeat', '2',
        '--warmup', '0', '--threads', '1', '--exporter', 'torchscript',
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result['export']['exporter'] == 'torchscript'
    assert result['export']['outputs'] == NECK_OUTPUTS
    assert [p['shape'] for p in result['parity']] == [[1, 3, 64, 64], [3, 3, 96, 160]]
    assert all(p['max_error'] <= DEFAULT_TOLERANCE for p in result['parity'])
    assert [t['shape'] for t in result['latency']] == [[1, 3, 64, 64], [3, 3, 96, 160]]
    engines = ['PyTorch NCHW', 'PyTorch channels-last', 'onnxruntime']
    assert all(list(t['ms']) == engines for t in result['latency'])
    assert all(min(t['ms'].values()) > 0 for t in result['latency'])
    assert '| 3x3x96x160 |' in proc.stdout and 'onnxruntime / PyTorch NCHW' in proc.stdout
    assert proc.stderr.strip() == ''  # no warnings
