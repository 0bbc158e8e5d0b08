"""FishNet's ``Pretrained`` init loads a checkpoint whole or not at all.

mmengine loads ``Pretrained`` checkpoints non-strictly and only logs the keys it cannot place, so
a FishNet-150 file saved under the FishNet-99 config's file name used to train a partly loaded
backbone. FishNet now checks the file first (``mmfish/models/backbones/fishnet_pretrained.py``):
another variant, missing or unexpected keys, or other shapes stop ``init_weights`` with the fix;
the legal differences (out norms from consumer keys, positional out-norm keys, the score head,
stages not built, a detector's backbone under ``prefix``) still load. The checkpoints are the
seeded reference-format weights of ``tests/fixtures/reference``, converted as a user does.
"""

import glob
import os.path as osp
import re
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from mmfish.models import FishNet
from mmfish.models.backbones.fishnet_pretrained import PretrainedMismatchError
from mmfish.models.backbones.variants import NO_PUBLISHED_WEIGHTS, PUBLISHED_WEIGHTS
from mmfish.models.converters import convert_checkpoint
from mmfish.testing import ROOT, TINY_CONFIG

register_all_modules()

# Every config that starts from ImageNet weights: the 1x COCO ones (FishNeXt has none) and the
# segmentation ones.
PRETRAINED_CONFIGS = sorted(
    osp.relpath(path, ROOT)
    for pattern in ('configs/*_fishnet*_fpn_1x_coco.py', 'configs/segmentation/*_fishnet*.py')
    for path in glob.glob(osp.join(ROOT, pattern))
)


@pytest.fixture(scope='module')
def converted(source_files, tmp_path_factory) -> Dict[str, Path]:
    """Per variant, its file converted by fishnet2mmdet's function (score head dropped)."""
    folder = tmp_path_factory.mktemp('converted')

    class Files(dict):
        def __missing__(self, arch: str) -> Path:
            path = folder / f'{arch}_in1k_mmfish.pth'
            convert_checkpoint(str(source_files[arch]), str(path))
            self[arch] = path
            return path

    return Files()


def _coco_detector(arch: str):
    """The Mask R-CNN of ``configs/mask_rcnn_<arch>_fpn_1x_coco.py``, built as train.py does."""
    return MODELS.build(
        Config.fromfile(osp.join(ROOT, 'configs', f'mask_rcnn_{arch}_fpn_1x_coco.py')).model
    )


def _save(path: Path, state_dict: dict, meta: dict = None) -> str:
    torch.save({'state_dict': state_dict, **({'meta': meta} if meta else {})}, path)
    return str(path)


def _pretrained(path, **kwargs) -> FishNet:
    return FishNet(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)


def _loaded(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)


def _assert_untouched(model: torch.nn.Module, before: Dict[str, torch.Tensor]) -> None:
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == [], f'{len(changed)} tensors were loaded before the refusal: {changed[:5]}'


# ------------------------------------------------------------------------- the case
@pytest.mark.parametrize(
    'holds, config_arch',
    [('fishnet150', 'fishnet99'), ('fishnet99', 'fishnet150'), ('fishnet150', 'fishnet201')],
)
def test_other_variant_under_the_configs_file_name_is_refused(
    holds, config_arch, converted, tmp_path, monkeypatch
):
    """A converted ``holds`` file where the config expects its own variant's: refused, nothing
    loaded, and the message names both variants and the file to convert."""
    detector = _coco_detector(config_arch)
    expected_path = detector.backbone.init_cfg['checkpoint']
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'checkpoints').mkdir()
    (tmp_path / expected_path).write_bytes(converted[holds].read_bytes())
    before = {k: v.clone() for k, v in detector.backbone.state_dict().items()}

    with pytest.raises(PretrainedMismatchError) as error:
        detector.init_weights()
    _assert_untouched(detector.backbone, before)
    message = str(error.value)
    print(message)
    assert f"FishNet (arch '{config_arch}') refuses" in message
    assert f"FishNet '{holds}' weights" in message and f"not '{config_arch}'" in message
    assert f"converted from '{holds}_ckpt.tar', reference layout" in message  # the file's meta
    assert 'unexpected: ' in message or 'missing: ' in message
    assert f'--arch {config_arch}' in message and expected_path in message
    if config_arch == 'fishnet99':
        assert 'fishnet2mmdet.py fishnet99_ckpt.tar checkpoints/fishnet99_in1k_mmfish.pth' in (
            message
        )
    if config_arch == 'fishnet201':
        assert 'No FishNet-201 ImageNet weights are published' in message
        assert 'configs/mask_rcnn_fishnet201_fpn_gn-all_scratch_6x_coco.py' in message

    # A file of the model's own variant under that name loads.
    (tmp_path / expected_path).write_bytes(converted[config_arch].read_bytes())
    _coco_detector(config_arch).init_weights()


def test_earlier_conversion_without_meta_is_refused_by_its_keys(converted, tmp_path):
    """Files converted before the converter wrote ``meta``: the block counts name the variant."""
    path = _save(tmp_path / 'old.pth', _loaded(str(converted['fishnet150']))['state_dict'])
    with pytest.raises(PretrainedMismatchError) as error:
        _pretrained(path, arch='fishnet99').init_weights()
    message = str(error.value)
    assert "its keys are those of FishNet 'fishnet150', not 'fishnet99'" in message
    # counts and the first keys of each kind: FishNet-150's 306 tensors of extra blocks
    assert 'unexpected: 306 (tail.1.blocks.2.norm1.weight, ' in message


# ------------------------------------------------------------ the missing-file message, per config
@pytest.mark.parametrize('config', PRETRAINED_CONFIGS)
def test_missing_file_message_names_the_configs_own_source(config, tmp_path, monkeypatch):
    backbone = Config.fromfile(osp.join(ROOT, config)).model.backbone
    monkeypatch.chdir(tmp_path)
    model = MODELS.build(backbone)
    path = backbone.init_cfg.checkpoint
    with pytest.raises(FileNotFoundError) as error:
        model.init_weights()
    message = str(error.value)
    arch = model.variant_name
    others = [w.file for w in PUBLISHED_WEIGHTS if w.arch != arch]
    assert not [f for f in others if f in message], f'{config} names another variant: {message}'
    if arch in NO_PUBLISHED_WEIGHTS:
        assert 'No FishNet-201 ImageNet weights are published' in message
        assert f'SOURCE {path} --arch {arch}' in message
    else:
        (source,) = [w for w in PUBLISHED_WEIGHTS if w.converted == path]  # the file it expects
        assert source.arch == arch
        assert f'fishnet2mmdet.py {source.file} {path} --arch {arch}' in message
    # Not the 1x configs' init_cfg=None, which keeps frozen stages and norms: the scratch recipe.
    assert f'configs/mask_rcnn_{arch}_fpn_gn-all_scratch_6x_coco.py' in message
    assert osp.isfile(osp.join(ROOT, 'configs', f'mask_rcnn_{arch}_fpn_gn-all_scratch_6x_coco.py'))


def test_published_weights_are_the_readmes_table():
    """``PUBLISHED_WEIGHTS`` (what the messages name) and the README's "ImageNet weights" table."""
    readme = open(osp.join(ROOT, 'README.md')).read()
    table = readme.split('\n## ImageNet weights', 1)[1].split('\n\n')[1]
    rows = [row.split('|')[1:-1] for row in table.splitlines() if row.startswith('| FishNet-')]
    supported, unsupported = set(), set()
    for variant, _, file, accuracy, converted in rows:
        arch = 'fishnet' + variant.strip().split('-')[1]
        target = re.findall(r'`([^`]+)`', converted)
        top1 = float(accuracy.split('/')[0])
        entry = (arch, file.strip().strip('`'), top1, target[0] if target else None)
        (supported if target else unsupported).add(entry)
    assert supported == {(w.arch, w.file, w.top1, w.converted) for w in PUBLISHED_WEIGHTS}
    assert {arch for arch, *_ in unsupported} <= set(NO_PUBLISHED_WEIGHTS)


# ---------------------------------------------------------------------- what else is refused
def test_a_missing_tensor_is_refused_even_with_the_right_meta(converted, tmp_path):
    checkpoint = _loaded(str(converted['fishnet99']))
    del checkpoint['state_dict']['head.1.transfer.0.conv2.weight']
    path = _save(tmp_path / 'partial.pth', checkpoint['state_dict'], checkpoint['meta'])
    with pytest.raises(PretrainedMismatchError, match=r'missing: 1 \(head.1.transfer.0.conv2'):
        _pretrained(path, arch='fishnet99').init_weights()


def test_an_extra_block_in_a_built_stage_is_refused(converted, tmp_path):
    state_dict = _loaded(str(converted['fishnet99']))['state_dict']
    state_dict['tail.0.blocks.7.conv1.weight'] = torch.zeros(32, 128, 1, 1)
    path = _save(tmp_path / 'extra.pth', state_dict)
    with pytest.raises(PretrainedMismatchError, match=r'unexpected: 1 \(tail.0.blocks.7.conv1'):
        _pretrained(path, arch='fishnet99').init_weights()


def test_fishnext_refuses_fishnet150_weights(converted, tmp_path):
    """FishNeXt-150 has FishNet-150's keys but grouped convolutions."""
    with pytest.raises(PretrainedMismatchError, match=r"'fishnet150' weights.*not 'fishnext150'"):
        _pretrained(converted['fishnet150'], arch='fishnext150').init_weights()
    # Without the meta, by shapes; the message says that no FishNeXt weights are published.
    path = _save(tmp_path / 'old.pth', _loaded(str(converted['fishnet150']))['state_dict'])
    with pytest.raises(PretrainedMismatchError) as error:
        _pretrained(path, arch='fishnext150').init_weights()
    message = str(error.value)
    assert 'of another shape: ' in message and 'No FishNeXt-150 ImageNet weights exist' in message
    # Its own weights load.
    own = FishNet('fishnext150')
    path = _save(tmp_path / 'fishnext.pth', own.state_dict())
    model = _pretrained(path, arch='fishnext150')
    model.init_weights()
    assert torch.equal(model.stem[0].weight, own.stem[0].weight)


def test_custom_archs(converted, tmp_path):
    # A dict with FishNet-99's settings is FishNet-99.
    model = _pretrained(converted['fishnet99'], arch=dict(FishNet.arch_settings['fishnet99']))
    assert model.variant_name == 'fishnet99'
    model.init_weights()
    # Another dict: its own checkpoint loads, a variant's does not.
    tiny = dict(FishNet.arch_settings['fishnet99'], tail_blocks=(1, 1, 1), head_blocks=(1, 1, 1))
    own = FishNet(tiny)
    path = _save(tmp_path / 'tiny.pth', own.state_dict())
    _pretrained(path, arch=tiny).init_weights()
    with pytest.raises(PretrainedMismatchError, match=r"FishNet \(a custom arch\) refuses.*"
                       r"'fishnet99' weights .*, not those of this custom arch"):  # fmt: skip
        _pretrained(converted['fishnet99'], arch=tiny).init_weights()


def test_batch_norm_weights_into_a_group_norm_backbone_are_refused(converted):
    gn = dict(type='GN', num_groups=16, requires_grad=True)
    expected = r'lose their running statistics.*Fix: Only norm statistics differ.*GN'
    with pytest.raises(PretrainedMismatchError, match=expected):
        _pretrained(converted['fishnet99'], arch='fishnet99', norm_cfg=gn).init_weights()


def test_detector_checkpoint_without_prefix_says_to_set_it(tmp_path):
    state = {f'backbone.{k}': v for k, v in FishNet('fishnet99').state_dict().items()}
    path = _save(tmp_path / 'detector.pth', state)
    with pytest.raises(PretrainedMismatchError, match=r"prefix='backbone.'"):
        _pretrained(path, arch='fishnet99').init_weights()


def test_unconverted_reference_file_says_to_convert_it(source_files):
    with pytest.raises(PretrainedMismatchError, match=r'not mmfish names: convert the file'):
        _pretrained(source_files['fishnet99'], arch='fishnet99').init_weights()


def test_a_missing_score_head_says_keep_score(converted):
    with pytest.raises(PretrainedMismatchError, match=r'--keep-score'):
        _pretrained(converted['fishnet99'], arch='fishnet99', num_classes=1000).init_weights()


# ------------------------------------------------------------------------ what still loads
def test_a_score_head_and_stages_not_built_are_not_in_the_way(source_files, tmp_path):
    path = tmp_path / 'with_score.pth'
    convert_checkpoint(str(source_files['fishnet99']), str(path), keep_score=True)
    saved = _loaded(str(path))['state_dict']
    model = _pretrained(path, arch='fishnet99')  # a detection backbone: no score head
    model.init_weights()
    assert torch.equal(model.head[2].blocks[0].conv1.weight, saved['head.2.blocks.0.conv1.weight'])
    tail_only = _pretrained(path, arch='fishnet99', out_indices=(1, 2, 3))  # no bridge, body, head
    tail_only.init_weights()
    assert torch.equal(
        tail_only.tail[2].blocks[0].conv1.weight, saved['tail.2.blocks.0.conv1.weight']
    )
    assert torch.equal(tail_only.out_norms['3'].weight, saved['bridge.squeeze.0.weight'])


def test_detector_backbone_with_positional_out_norms_loads_under_prefix(tmp_path):
    """An mmfish detector trained before the out norms were keyed by feature index."""
    source = FishNet('fishnet99')
    for p in source.parameters():
        p.data.uniform_(-1, 1)
    state = OrderedDict()
    for key, value in source.state_dict().items():
        if key.startswith('out_norms.'):
            _, index, leaf = key.split('.')
            key = f'out_norms.{source.out_indices.index(int(index))}.0.{leaf}'
        state[f'backbone.{key}'] = value
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    path = _save(tmp_path / 'detector.pth', state)
    model = FishNet(
        'fishnet99', init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    )
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # A prefix that names nothing in the file says so.
    bad = FishNet('fishnet99', init_cfg=dict(type='Pretrained', checkpoint=path, prefix='model.'))
    with pytest.raises(PretrainedMismatchError, match=r"no key starts with prefix 'model.'"):
        bad.init_weights()


# ---------------------------------------------------------------------- through tools/train.py
@pytest.mark.slow
def test_train_py_stops_before_training(
    converted, tmp_path, tiny_shapes: str, data_opts: Callable, run_tool: Callable
):
    """The issue's run: FishNet-99 from a FishNet-150 file. It stops before the first iteration."""
    config = tmp_path / 'fishnet99_from_150.py'
    config.write_text(
        f'_base_ = {TINY_CONFIG!r}\n'
        'model = dict(\n'
        f"    backbone=dict(arch='fishnet99', init_cfg=dict(_delete_=True, type='Pretrained', "
        f'checkpoint={str(converted["fishnet150"])!r})),\n'
        '    neck=dict(in_channels=[320, 832, 1600, 2112]),\n'
        ')\n'
    )
    work = tmp_path / 'work'
    proc = run_tool('train.py', str(config), '--work-dir', str(work), '--cfg-options',
                    *data_opts(tiny_shapes))  # fmt: skip
    assert proc.returncode != 0
    last_line = proc.stderr.strip().splitlines()[-1]
    assert 'PretrainedMismatchError' in last_line and "FishNet 'fishnet150' weights" in last_line
    assert 'Epoch(train)' not in proc.stdout + proc.stderr
    assert not list(work.glob('*.pth'))
