"""The FishNet-150 configs of the model families beyond the R-CNNs, Semantic FPN and UPerNet
(docs/zoo.md, "First-class configs"): their recipe, and each builds, loads the converted
ImageNet weights with no missing key and trains one step."""

import os.path as osp
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Dict

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import checkpoint as mmengine_checkpoint

from mmfish.models import FishNet
from mmfish.models.converters import convert_checkpoint
from mmfish.testing import ROOT, import_tool, seeded_reference_state_dict
from mmfish.zoo.swap import CLIP_GRAD, default_checkpoint, resnet_outputs

pytest.importorskip('mmseg')
zoo_matrix = import_tool('dev', 'zoo_matrix')

# config -> (toolbox, the installed toolbox's R-50 recipe it swaps the backbone of)
CONFIGS: Dict[str, tuple] = {
    'configs/retinanet_fishnet150_fpn_1x_coco.py': (
        'mmdet', 'retinanet/retinanet_r50_fpn_1x_coco.py'),
    'configs/fcos_fishnet150_fpn_gn-head_1x_coco.py': (
        'mmdet', 'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'),
    'configs/cascade_mask_rcnn_fishnet150_fpn_1x_coco.py': (
        'mmdet', 'cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py'),
    'configs/dino_fishnet150_4scale_12e_coco.py': (
        'mmdet', 'dino/dino-4scale_r50_8xb2-12e_coco.py'),
    'configs/mask2former_fishnet150_8xb2-lsj-50e_coco.py': (
        'mmdet', 'mask2former/mask2former_r50_8xb2-lsj-50e_coco.py'),
    'configs/segmentation/mask2former_fishnet150_8xb2-160k_ade20k-512x512.py': (
        'mmseg', 'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'),
    'configs/segmentation/deeplabv3plus_fishnet150_4xb2-80k_cityscapes-512x1024.py': (
        'mmseg', 'deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py'),
    'configs/segmentation/pspnet_fishnet150_4xb2-80k_cityscapes-512x1024.py': (
        'mmseg', 'pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py'),
}  # fmt: skip


def plain(value):
    """A config value without the ``_scope_`` keys that ``mmdet::`` bases add."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def recipe(toolbox: str, name: str) -> Config:
    return Config.fromfile(osp.join(zoo_matrix.configs_root(toolbox), name))


def consumers(model) -> Dict[str, tuple]:
    """What reads the backbone: key -> (channels, index of the backbone output it reads)."""
    found = {}
    if model.get('neck'):
        found.update({f'neck[{i}]': (c, i) for i, c in enumerate(model.neck.in_channels)})
        return found
    if 'panoptic_head' in model:
        heads = {'panoptic_head': model.panoptic_head}
    else:
        heads = {k: model[k] for k in ('decode_head', 'auxiliary_head') if model.get(k)}
    for key, head in heads.items():
        channels, index = head.in_channels, head.get('in_index')
        if isinstance(channels, int):
            channels, index = [channels], [index]
        elif index is None:  # every input, in order
            index = list(range(len(channels)))
        found.update({f'{key}[{n}]': (c, i) for n, (c, i) in enumerate(zip(channels, index))})
        if 'c1_in_channels' in head:
            found[f'{key}.c1'] = (head.c1_in_channels, 0)
    return found


def test_every_config_of_the_folder_is_tested_here_or_in_test_configs():
    tested_elsewhere = ('faster_rcnn_', 'mask_rcnn_', 'fpn_', 'upernet_')
    found = {
        osp.relpath(p, ROOT)
        for folder in ('configs', osp.join('configs', 'segmentation'))
        for p in Path(ROOT, folder).glob('*.py')
        if not p.name.startswith(tested_elsewhere)
    }
    assert found == set(CONFIGS)


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_config_is_the_recipe_with_the_fishnet_family_settings(config):
    toolbox, name = CONFIGS[config]
    cfg, original = Config.fromfile(osp.join(ROOT, config)), recipe(toolbox, name)
    assert 'mmfish' in cfg.custom_imports.imports and not cfg.custom_imports.allow_failed_imports
    backbone = cfg.model.backbone
    assert backbone.type == 'FishNet' and backbone.arch == 'fishnet150' and backbone.out_norm
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=default_checkpoint('fishnet150'))
    if toolbox == 'mmdet':  # configs/_base_/fishnet150_fpn.py
        assert backbone.frozen_stages == 1 and backbone.norm_eval
        assert cfg.model.data_preprocessor.pad_size_divisor == 32
        # the R-CNN family's clipping, or the recipe's own where it clips harder (DETR family)
        clip = original.optim_wrapper.get('clip_grad')
        assert plain(cfg.optim_wrapper.clip_grad) == plain(clip if clip else CLIP_GRAD)
        assert cfg.optim_wrapper.clip_grad.max_norm <= CLIP_GRAD['max_norm']
    else:  # configs/segmentation/_base_/fishnet150.py
        assert backbone.frozen_stages == -1 and not backbone.norm_eval
        assert backbone.norm_cfg.type == 'SyncBN'
        assert not cfg.model.get('pretrained')
        assert cfg.model.data_preprocessor.test_cfg == dict(size_divisor=32)
    if 'mask2former' in config and toolbox == 'mmseg':  # states the base's settings itself
        base = Config.fromfile(osp.join(ROOT, 'configs', 'segmentation', '_base_', 'fishnet150.py'))
        expected = dict(base.fishnet_backbone, out_indices=backbone.out_indices)
        assert plain(backbone) == plain({k: v for k, v in expected.items() if k != '_delete_'})
    assert cfg.default_hooks.checkpoint.type == 'FaultTolerantCheckpointHook'
    assert cfg.train_cfg.type.startswith('Resumable')
    # what the recipe trains on and how long is the recipe's
    for key in ('train_dataloader', 'param_scheduler', 'val_evaluator'):
        assert plain(cfg[key]) == plain(original[key]), key
    assert plain(cfg.optim_wrapper.optimizer) == plain(original.optim_wrapper.optimizer)
    # what reads the backbone reads FishNet's channels, at the stride the recipe reads it
    fishnet = FishNet(arch='fishnet99', out_indices=backbone.out_indices)
    resnet = resnet_outputs(original.model.backbone)
    ours, theirs = consumers(cfg.model), consumers(original.model)
    assert ours.keys() == theirs.keys()
    for key, (channels, index) in ours.items():
        assert channels == fishnet.out_channels[index], key
        assert fishnet.out_strides[index] == resnet[theirs[key][1]][1], key


@pytest.fixture(scope='module')
def imagenet_file(tmp_path_factory) -> str:
    """FishNet-150 ImageNet weights (the fixtures' seeded ones) converted as a user does."""
    folder = tmp_path_factory.mktemp('zoo_configs')
    src = folder / 'fishnet150_ckpt.tar'
    state_dict = seeded_reference_state_dict('fishnet150')
    torch.save({'state_dict': OrderedDict(('module.' + k, v) for k, v in state_dict.items())}, src)
    dst = folder / 'fishnet150_in1k_mmfish.pth'
    convert_checkpoint(str(src), str(dst))
    return str(dst)


class Loads:
    """What mmengine's ``load_state_dict`` gets for FishNet, after FishNet's load pre-hook has
    given each out norm its trained counterpart (:meth:`FishNet.fill_out_norms`): the keys the
    model has and the file lacks, those the file has and the model does not build."""

    def __init__(self, monkeypatch) -> None:
        self.calls = []
        original = mmengine_checkpoint.load_state_dict

        def spy(module, state_dict, strict=False, logger=None):
            filled = dict(state_dict)
            module.fill_out_norms(filled)
            own = set(module.state_dict())
            self.calls.append((sorted(own - set(filled)), sorted(set(filled) - own)))
            return original(module, state_dict, strict=strict, logger=logger)

        monkeypatch.setattr(mmengine_checkpoint, 'load_state_dict', spy)


@pytest.mark.slow
@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_config_loads_imagenet_weights_and_trains_a_step(config, imagenet_file, monkeypatch):
    toolbox = CONFIGS[config][0]
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.model.backbone.init_cfg.checkpoint = imagenet_file
    # speed: the step's 256 px image is not padded to Mask2Former's 1024 px
    cfg.model.data_preprocessor.pop('batch_augments', None)
    loads = Loads(monkeypatch)
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='FishNet: the checkpoint has no trained norm')
        model = zoo_matrix.build_model(cfg, toolbox)  # initialised: the backbone's file loaded
    ((missing, unexpected),) = loads.calls
    assert missing == []
    # the file's keys that this model does not use: stages after its last feature, the out
    # norms of features it does not return
    built = {k.split('.')[0] + '.' + k.split('.')[1] for k in model.backbone.state_dict()}
    unused = [
        k
        for k in unexpected
        if not k.startswith('out_norms.') and '.'.join(k.split('.')[:2]) in built
    ]
    assert unused == []
    saved = torch.load(imagenet_file, weights_only=True)['state_dict']
    assert torch.equal(model.backbone.stem[0].weight, saved['stem.0.weight'])
    stem = model.backbone.stem[0].weight.detach().clone()
    assert zoo_matrix.step(model, cfg, toolbox) > 0
    # frozen stem (detection) or trained (segmentation), as the family sets it
    assert (model.backbone.stem[0].weight.grad is None) == (toolbox == 'mmdet')
    assert torch.equal(model.backbone.stem[0].weight, stem)
