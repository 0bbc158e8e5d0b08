# UPerNet, FishNet-150, ADE20K (150 classes) under data/ade/ADEChallengeData2016/: mmseg's own
# R-50 recipe (512x512 crops, 16 images per iteration = 4 GPUs x 4, SGD 0.01 with poly decay,
# 160k iterations, SyncBN, FCN auxiliary head, mIoU) with the backbone swapped.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

# tools/model_converters/fishnet2mmdet.py writes this file from the authors' ImageNet checkpoint
# (README, "ImageNet weights"); --cfg-options model.backbone.init_cfg=None trains from scratch.
pretrained = 'checkpoints/fishnet150_in1k_mmfish.pth'
model = dict(
    pretrained=None,  # mmseg's base names ResNet's open-mmlab:// weights here
    # FishNet needs sides that are multiples of 32: training crops are; ADE20K's test images
    # (short side 512, any aspect ratio) are padded, and the logits cropped back.
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
    decode_head=dict(in_channels=[320, 832, 1600, 2112]),
    # on the stride-16 feature, as mmseg's ResNet configs put it on C4
    auxiliary_head=dict(in_channels=1600, in_index=2),
)
