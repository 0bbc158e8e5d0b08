# Mask R-CNN, FishNet-150 + FPN, 1x schedule (12 epochs), COCO 2017 under data/coco/.
# 16 images per iteration (8 GPUs x 2); --auto-scale-lr rescales lr for other batch sizes.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

# tools/model_converters/fishnet2mmdet.py writes this file from the authors' ImageNet checkpoint
# (README, "ImageNet weights"); --cfg-options model.backbone.init_cfg=None trains from scratch.
pretrained = 'checkpoints/fishnet150_in1k_mmfish.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='FishNet',
        arch='fishnet150',
        out_indices=(7, 8, 9, 10),  # body's last feature + head: strides 4, 8, 16, 32
        out_norm=True,
        frozen_stages=1,  # stem and first tail stage, as mmdet's ResNet configs freeze
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    # = FishNet.out_channels for these out_indices (tests/test_configs.py checks it)
    neck=dict(in_channels=[320, 832, 1600, 2112]),
)
# The paper trains detectors with warm-up (mmdet's 1x schedule: linear, 500 iterations) and
# gradient clipping.
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
