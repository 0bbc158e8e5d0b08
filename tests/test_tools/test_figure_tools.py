"""The paper's claims made visible: tools/analysis_tools/gradient_flow.py and feature_maps.py."""

import importlib.util
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch

from mmfish.models import FishNet
from mmfish.models.backbones.fish_blocks import PreActBottleneck
from mmfish.testing import ROOT

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def load_tool(name: str):
    """Import ``tools/analysis_tools/<name>.py`` as a module."""
    path = osp.join(ROOT, 'tools', 'analysis_tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'mmfish_tool_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def gradient_flow():
    return load_tool('gradient_flow')


@pytest.fixture(scope='module')
def feature_maps():
    return load_tool('feature_maps')


@pytest.fixture()
def photo(tmp_path) -> str:
    """A small RGB picture: a bright square on a gradient (96 x 80)."""
    import mmcv

    image = np.zeros((96, 80, 3), dtype=np.uint8)
    image[..., 0] = np.linspace(0, 255, 80, dtype=np.uint8)[None]
    image[30:70, 20:60] = (250, 240, 30)
    path = str(tmp_path / 'photo.png')
    mmcv.imwrite(image[..., ::-1], path)
    mmcv.imwrite(image[::-1].copy(), str(tmp_path / 'photo_flipped.png'))
    return path


# --------------------------------------------------------------------------------- gradient flow
def test_gradient_flow_writes_both_files_with_every_model(gradient_flow, tmp_path):
    out = tmp_path / 'flow'
    models = ['fishnet99', 'resnet18']
    gradient_flow.main(
        ['--models', *models, '--shape', '32', '--batch', '2', '--out-dir', str(out)]
    )
    summary = json.loads((out / 'gradient_flow.json').read_text())
    assert list(summary['models']) == models
    assert (out / 'gradient_flow.png').read_bytes()[:8] == PNG_SIGNATURE

    fish = summary['models']['fishnet99']
    # eleven features, from the output (head.2) back to the stem
    assert [row['name'] for row in fish['features']][0] == '10: head.2'
    assert [row['name'] for row in fish['features']][-1] == '0: stem'
    assert len(fish['features']) == 11
    blocks = sum(isinstance(m, PreActBottleneck) for m in FishNet('fishnet99').modules())
    assert len(fish['blocks']) == blocks
    resnet = summary['models']['resnet18']
    assert [row['name'] for row in resnet['features']] == [
        'layer4', 'layer3', 'layer2', 'layer1', 'stem'
    ]  # fmt: skip
    assert len(resnet['blocks']) == 8  # 2 + 2 + 2 + 2 basic blocks
    for result in summary['models'].values():
        for key in ('features', 'blocks'):
            rows = result[key]
            assert rows[0]['relative'] == 1.0 and rows[0]['depth'] == 1.0
            assert rows[-1]['depth'] == 0.0
            assert all(math.isfinite(r['relative']) and r['grad_norm'] > 0 for r in rows)


def test_gradient_flow_normalises_by_the_output(gradient_flow):
    probe = gradient_flow.Probe('resnet18')
    torch.manual_seed(0)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    result = gradient_flow.measure(probe, images, labels)
    # train mode throughout: mmdet's ResNet would otherwise keep its norms frozen (norm_eval)
    assert all(m.training for m in probe.model.modules())
    stage4 = result['features'][0]
    # the recorded gradient is that of the loss with respect to stage 4's output
    probe.model.zero_grad()
    feature = probe.model.backbone(images)[-1]
    logits = probe.model.fc(feature.mean((2, 3)))
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, labels), feature)
    assert stage4['grad_norm'] == pytest.approx(float(grad.norm()), rel=1e-4)
    for row in result['features']:
        assert row['relative'] == pytest.approx(row['grad_norm'] / stage4['grad_norm'])


def test_gradient_flow_reads_images_and_a_checkpoint(gradient_flow, photo, tmp_path):
    probe = gradient_flow.Probe('fishnet99')
    weights = {f'backbone.{k}': v for k, v in probe.model.state_dict().items()}
    torch.save(dict(state_dict=weights), tmp_path / 'detector.pth')
    out = tmp_path / 'flow'
    results = gradient_flow.run(
        gradient_flow.parse_args(
            [
                '--models',
                'fishnet99',
                '--shape',
                '32',
                '--batch',
                '2',
                '--out-dir',
                str(out),
                '--images',
                osp.dirname(photo),
                '--checkpoint',
                f'fishnet99={tmp_path / "detector.pth"}',
            ]
        )  # fmt: skip
    )
    assert results['fishnet99']['loaded']['loaded'] == len(weights)
    summary = json.loads((out / 'gradient_flow.json').read_text())
    assert summary['batch'] == 2 and "'photo.png', 'photo_flipped.png'" in summary['input']


def test_gradient_flow_loads_a_torchvision_layout_resnet(gradient_flow, tmp_path):
    torch.manual_seed(3)
    source = gradient_flow.Probe('resnet18')
    # torchvision's names: conv1, bn1, layer1.0.conv1, ..., fc (no 'backbone.' prefix)
    state = {k.replace('backbone.', '', 1): v for k, v in source.model.state_dict().items()}
    assert 'fc.weight' in state and 'layer1.0.bn1.weight' in state
    torch.save(state, tmp_path / 'resnet18.pth')
    torch.manual_seed(4)
    probe = gradient_flow.Probe('resnet18')
    assert probe.load(str(tmp_path / 'resnet18.pth')) == dict(loaded=len(state), missing=0)
    for key, value in probe.model.state_dict().items():
        torch.testing.assert_close(value, source.model.state_dict()[key])


def test_gradient_flow_rejects_a_foreign_checkpoint(gradient_flow, tmp_path):
    torch.save({'encoder.weight': torch.zeros(2)}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='none of its 1 keys.*is a fishnet99 key'):
        gradient_flow.Probe('fishnet99').load(str(tmp_path / 'other.pth'))


@pytest.mark.parametrize(
    'argv, message',
    [
        (['--models', 'fishnet42'], "unknown model 'fishnet42'.*fishnet150.*resnet50"),
        (['--models', 'fishnet99', '--shape', '100'], 'multiple of 32'),
        (['--models', 'fishnet99', '--checkpoint', 'a.pth'], 'MODEL=PATH'),
        (['--models', 'fishnet99', '--checkpoint', 'resnet50=a.pth'], 'not among --models'),
        (['--models', 'fishnet99', '--images', '/nonexistent'], 'no such directory'),
    ],
)
def test_gradient_flow_bad_input(gradient_flow, tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        gradient_flow.main(['--shape', '32', '--batch', '2', '--out-dir', str(tmp_path), *argv])


def test_gradient_flow_unreadable_image(gradient_flow, photo, tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'images' / 'a.png').write_bytes(open(photo, 'rb').read())
    (tmp_path / 'images' / 'broken.jpg').write_text('not a picture')
    with pytest.raises(SystemExit, match=r'broken\.jpg: cannot be read as an image'):
        gradient_flow.main(
            ['--models', 'fishnet99', '--shape', '32', '--batch', '2',
             '--images', str(tmp_path / 'images'), '--out-dir', str(tmp_path / 'out')]
        )  # fmt: skip


# ---------------------------------------------------------------------------------- feature maps
def test_feature_maps_draws_eleven_titled_panels(feature_maps, photo, tmp_path):
    out = tmp_path / 'maps'
    feature_maps.main([photo, '--arch', 'fishnet99', '--size', '64', '--out-dir', str(out)])
    assert (out / 'feature_maps.png').read_bytes()[:8] == PNG_SIGNATURE
    description = json.loads((out / 'feature_maps.json').read_text())
    panels = description['panels']
    assert [p['index'] for p in panels] == list(range(11))
    model = FishNet('fishnet99', out_indices=tuple(range(11)))
    for panel, info in zip(panels, model.feature_info):
        assert (panel['part'], panel['channels'], panel['stride']) == (
            info['name'], info['channels'], info['stride']
        )  # fmt: skip
        title = panel['title']  # read back from the figure's axes
        assert title.startswith(f'{panel["index"]} {info["name"]}')
        assert f'{info["channels"]} ch' in title and f'stride {info["stride"]}' in title
    # 96 x 80 resized to a longer side of 64: 64 x 64 (multiples of 32)
    assert description['input_size'] == [64, 64]
    assert panels[10]['size'] == [2, 2] and panels[0]['size'] == [16, 16]
    assert 'random initialisation' in description['weights']


def test_feature_maps_figure_has_eleven_axes(feature_maps):
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    model = FishNet('fishnet99', out_indices=tuple(range(11)))
    features = feature_maps.extract(model, image, feature_maps.IMAGENET_MEAN, (58.0,) * 3)
    fig = feature_maps.draw(features, model.feature_info, image, 'squeeze_mean', 'test')
    assert len(fig.axes) == 11
    assert [ax.get_title().split()[0] for ax in fig.axes] == [str(i) for i in range(11)]


def test_feature_maps_with_a_detector_config_and_checkpoint(feature_maps, photo, tmp_path):
    config = osp.join(ROOT, 'configs', 'mask_rcnn_fishnet99_fpn_1x_coco.py')
    torch.manual_seed(1)
    source = FishNet('fishnet99', out_indices=tuple(range(11)), out_norm=False)
    source.init_weights()
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    torch.save(dict(state_dict=state), tmp_path / 'detector.pth')

    model, mean, std = feature_maps.build_from_config(config)
    assert feature_maps.load_backbone_weights(model, str(tmp_path / 'detector.pth')) == len(
        source.state_dict()
    )
    image = feature_maps.resize_to_multiple(feature_maps.read_image(photo), 64)
    ours = feature_maps.extract(model, image, mean, std)
    expected = feature_maps.extract(source, image, mean, std)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b)

    out = tmp_path / 'maps'
    feature_maps.main(
        [photo, '--config', config, '--checkpoint', str(tmp_path / 'detector.pth'),
         '--size', '64', '--out-dir', str(out), '--format', 'jpg']
    )  # fmt: skip
    assert (out / 'feature_maps.jpg').read_bytes()[:2] == b'\xff\xd8'
    assert len(json.loads((out / 'feature_maps.json').read_text())['panels']) == 11


@pytest.mark.parametrize(
    'make_argv, message',
    [
        (lambda d, p: [p, '--arch', 'fishnet42'], 'unknown FishNet variant.*fishnet150'),
        (lambda d, p: [str(d / 'missing.jpg'), '--arch', 'fishnet99'], 'no such image file'),
        (lambda d, p: [str(d / 'broken.jpg'), '--arch', 'fishnet99'], 'cannot be read as an'),
        (lambda d, p: [p, '--config', str(d / 'resnet_cfg.py')], "'ResNet', not FishNet"),
        (lambda d, p: [p, '--arch', 'fishnet99', '--checkpoint', str(d / 'x.pth')], 'no such'),
    ],
)
def test_feature_maps_bad_input(feature_maps, photo, tmp_path, make_argv, message):
    (tmp_path / 'broken.jpg').write_text('not a picture')
    (tmp_path / 'resnet_cfg.py').write_text(
        "model = dict(backbone=dict(type='ResNet', depth=50))\n"
    )
    with pytest.raises(SystemExit, match=message):
        feature_maps.main([*make_argv(tmp_path, photo), '--out-dir', str(tmp_path / 'out')])
