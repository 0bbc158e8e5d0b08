# Semantic FPN, FishNet-150, Cityscapes (19 classes) under data/cityscapes/: mmseg's own R-50
# recipe (512x1024 crops, 8 images per iteration = 4 GPUs x 2, SGD 0.01 with poly decay, 80k
# iterations, SyncBN, mIoU) with the backbone swapped.
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

# tools/model_converters/fishnet2mmdet.py writes this file from the authors' ImageNet checkpoint
# (README, "ImageNet weights"); --cfg-options model.backbone.init_cfg=None trains from scratch.
pretrained = 'checkpoints/fishnet150_in1k_mmfish.pth'
model = dict(
    pretrained=None,  # mmseg's base names ResNet's open-mmlab:// weights here
    # FishNet needs sides that are multiples of 32: training crops are; test images are padded.
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    backbone=dict(
        _delete_=True,
        type='FishNet',
        arch='fishnet150',
        # the body's last feature and the head's three: strides 4, 8, 16, 32 (the measurement on
        # the shapes data has not yet decided between this and the alternatives: README,
        # "Semantic segmentation")
        out_indices=(7, 8, 9, 10),
        out_norm=True,
        frozen_stages=-1,  # as mmseg's ResNet configs: nothing frozen, norms trained
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    # = FishNet.out_channels for these out_indices (tests/test_segmentation.py checks it)
    neck=dict(in_channels=[320, 832, 1600, 2112]),
)
