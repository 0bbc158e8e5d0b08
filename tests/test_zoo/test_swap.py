"""The swap of a config's ResNet for FishNet (:mod:`mmfish.zoo.swap`): strides, channels, the
consumers it rewrites (each checked on the built model), the config it writes, its errors.

The swap's results over every model family that mmdet and mmseg ship are the matrix of
docs/zoo.md (``test_zoo_matrix.py``)."""

import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmfish.models import FishNet
from mmfish.zoo.swap import (
    IMAGENET_NORMALISATION,
    SwapError,
    default_checkpoint,
    fishnet_features,
    fishnet_out_indices,
    load,
    resnet_outputs,
    swap_backbone,
)

mmseg = pytest.importorskip('mmseg')
from mmseg.registry import MODELS as SEG_MODELS  # noqa: E402
from mmseg.utils import register_all_modules as register_seg_modules  # noqa: E402

register_all_modules(init_default_scope=False)
register_seg_modules(init_default_scope=False)

RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


def swapped(name: str, **kwargs) -> Config:
    cfg, reference = load(name)
    return swap_backbone(cfg, reference, 'fishnet99', checkpoint=None, **kwargs).config()


def plain(value):
    """A config value without the ``_scope_`` keys that ``mmdet::`` bases add."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def build(cfg: Config, toolbox: str) -> torch.nn.Module:
    registry = DET_MODELS if toolbox == 'mmdet' else SEG_MODELS
    with DefaultScope.overwrite_default_scope(toolbox):
        return registry.build(cfg.model).eval()


# ----------------------------------------------------------------------------------- strides
def test_each_stride_gets_fishnets_deepest_feature_there():
    built = FishNet(arch='fishnet99', out_indices=(10,))
    features = [(f['channels'], f['stride']) for f in built.feature_info]
    assert fishnet_features('fishnet99') == tuple(features)
    chosen = fishnet_out_indices((4, 8, 16, 32), 'fishnet99')
    for stride, index in zip((4, 8, 16, 32), chosen):
        same_stride = [i for i, (_, s) in enumerate(features) if s == stride]
        assert index == max(same_stride)


def test_outputs_sharing_a_stride_get_distinct_features_deeper_for_deeper_outputs():
    chosen = fishnet_out_indices((4, 8, 8, 8), 'fishnet99')  # a ResNet-D8
    strides = [fishnet_features('fishnet99')[i][1] for i in chosen]
    assert strides == [4, 8, 8, 8]
    assert len(set(chosen)) == 4 and list(chosen[1:]) == sorted(chosen[1:])


def test_more_outputs_at_a_stride_than_fishnet_has_is_an_error():
    with pytest.raises(SwapError, match='stride 4'):
        fishnet_out_indices((4, 4, 4), 'fishnet99')


@pytest.mark.parametrize(
    'backbone',
    [
        dict(type='ResNet', depth=18, out_indices=(1, 3)),
        dict(type='ResNet', depth=50),
        dict(type='ResNetV1c', depth=101, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)),
        dict(
            type='ResNet',
            depth=34,
            num_stages=3,
            strides=(1, 2, 2),
            dilations=(1, 1, 1),
            out_indices=(2,),
        ),
    ],
)
def test_resnet_channels_and_strides_are_the_built_resnets(backbone):
    seg = backbone['type'] == 'ResNetV1c'
    registry = SEG_MODELS if seg else DET_MODELS
    # in its own scope: a default scope left by an earlier test would send the build elsewhere
    with DefaultScope.overwrite_default_scope('mmseg' if seg else 'mmdet'), torch.device('meta'):
        model = registry.build(backbone)
        outputs = model(torch.empty(1, 3, 64, 64))
    assert resnet_outputs(backbone) == [(o.shape[1], 64 // o.shape[-1]) for o in outputs]


# ------------------------------------------------------------------------------- consumers
def _extract(model: torch.nn.Module, size: int = 64):
    with torch.no_grad():
        return model.extract_feat(torch.rand(1, 3, size, size))


@pytest.mark.parametrize(
    'name',
    [
        RETINANET,  # FPN
        'mmdet::centernet/centernet_r18_8xb16-crop512-140e_coco.py',  # CTResNetNeck: last only
        'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',  # ChannelMapper on C3-C5
        'mmdet::yolof/yolof_r50-c5_8xb8-1x_coco.py',  # DilatedEncoder on C5
        'mmdet::dyhead/atss_r50_fpn_dyhead_1x_coco.py',  # a list of necks: FPN, then DyHead
    ],
)
def test_detector_neck_reads_fishnet(name):
    cfg = swapped(name)
    model = build(cfg, 'mmdet')
    assert isinstance(model.backbone, FishNet)
    original = load(name)[0].model.backbone
    strides = [s for _, s in resnet_outputs(original)]
    assert list(model.backbone.out_strides) == strides
    features = _extract(model)
    assert all(torch.isfinite(f).all() for f in features)


def test_mask2former_pixel_decoder_reads_fishnet():
    cfg = swapped('mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py')
    model = build(cfg, 'mmdet')
    assert cfg.model.panoptic_head.in_channels == list(model.backbone.out_channels)
    with torch.no_grad():
        mask_features, _ = model.panoptic_head.pixel_decoder(_extract(model))
    assert mask_features.shape[-2:] == (16, 16)  # stride 4


@pytest.mark.parametrize(
    'name',
    [
        'mmseg::fastfcn/fastfcn_r50-d32_jpu_psp_4xb2-80k_cityscapes-512x1024.py',  # JPU
        'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',  # c1
        'mmseg::ocrnet/ocrnet_r101-d8_4xb2-40k_cityscapes-512x1024.py',  # a cascade of heads
        'mmseg::pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py',  # auxiliary head
    ],
)
def test_segmentor_heads_read_fishnet(name):
    cfg = swapped(name)
    model = build(cfg, 'mmseg')
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), mode='tensor')
    assert logits.shape[:2] == (1, 19)
    if 'auxiliary_head' in cfg.model:
        aux = cfg.model.auxiliary_head
        with torch.no_grad():
            features = model.extract_feat(torch.rand(1, 3, 64, 64))
            model.auxiliary_head(features)  # runs on the feature in_index names
        assert aux.in_channels == features[aux.in_index].shape[1]


def test_jpu_hands_on_backbone_features_and_its_own():
    """FastFCN's decode head reads two backbone features passed through the JPU and the JPU's
    own fused feature: only the first two change."""
    name = 'mmseg::fastfcn/fastfcn_r50-d32_jpu_enc_4xb4-80k_ade20k-512x512.py'
    original = load(name)[0].model
    cfg = swapped(name)
    own = original.neck.mid_channels * len(original.neck.dilations)
    fishnet = FishNet(arch='fishnet99', out_indices=cfg.model.backbone.out_indices).out_channels
    assert cfg.model.decode_head.in_channels == [*fishnet[:2], own]


# --------------------------------------------------------------------------- the written config
def test_written_config_inherits_the_original_and_states_only_what_changed():
    cfg, reference = load(RETINANET)
    swap = swap_backbone(cfg, reference, 'fishnet150')
    text = swap.text()
    assert f"_base_ = '{RETINANET}'" in text
    merged = swap.config()
    assert merged.model.backbone.type == 'FishNet' and merged.model.backbone.arch == 'fishnet150'
    assert merged.model.backbone.init_cfg.checkpoint == default_checkpoint('fishnet150')
    assert merged.model.backbone.frozen_stages == 1 and merged.model.backbone.norm_eval
    assert merged.optim_wrapper.clip_grad.max_norm > 0
    assert set(swap.changes) == {'model', 'optim_wrapper'}
    assert set(swap.changes['model']) == {'backbone', 'neck'}
    for key in ('bbox_head', 'train_cfg', 'test_cfg'):
        assert plain(merged.model[key]) == plain(cfg.model[key])
    assert plain(merged.train_dataloader) == plain(cfg.train_dataloader)
    assert merged.model.neck.in_channels == [320, 832, 1600, 2112]


def test_caffe_style_resnet_configs_get_imagenets_rgb_normalisation():
    merged = swapped('mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py')
    preprocessor = merged.model.data_preprocessor
    assert {k: preprocessor[k] for k in IMAGENET_NORMALISATION} == IMAGENET_NORMALISATION


def test_without_an_imagenet_start_nothing_is_frozen():
    backbone = swapped(RETINANET).model.backbone
    assert backbone.init_cfg is None and backbone.frozen_stages == -1 and not backbone.norm_eval


def test_detr_recipes_are_padded_to_multiples_of_32():
    merged = swapped('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py')
    assert merged.model.data_preprocessor.pad_size_divisor == 32


# ---------------------------------------------------------------------------------- bad input
def _error(cfg: Config) -> str:
    with pytest.raises(SwapError) as info:
        swap_backbone(cfg, RETINANET)
    message = str(info.value)
    assert '\n' not in message
    return message


def test_a_backbone_that_is_not_a_resnet_is_named():
    cfg = load('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')[0]
    message = _error(cfg)
    assert (
        'model.backbone' in message and 'SwinTransformer' in message and 'not a ResNet' in message
    )


def test_an_unknown_neck_is_named():
    cfg = load(RETINANET)[0]
    cfg.model.neck.type = 'MyNeck'
    message = _error(cfg)
    assert 'model.neck' in message and 'MyNeck' in message and 'by hand' in message


def test_a_channel_count_that_is_not_the_resnets_is_named():
    cfg = load(RETINANET)[0]
    cfg.model.neck.in_channels = [256, 512, 1024, 999]
    message = _error(cfg)
    assert 'model.neck.in_channels[3]=999' in message and '2048' in message


def test_a_c4_roi_head_that_reads_the_backbone_is_named():
    cfg = load('mmdet::faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py')[0]
    assert 'model.roi_head' in _error(cfg)


def test_an_arch_without_published_weights_needs_a_checkpoint():
    cfg = load(RETINANET)[0]
    with pytest.raises(SwapError, match='fishnet201'):
        swap_backbone(cfg, RETINANET, 'fishnet201')
    assert swap_backbone(cfg, RETINANET, 'fishnet201', checkpoint=None).arch == 'fishnet201'
