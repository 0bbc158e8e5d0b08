# DeepLabV3+, FishNet-150, Cityscapes (19 classes) under data/cityscapes/: mmseg's own R-50-D8
# recipe (512x1024 crops, 8 images per iteration = 4 GPUs x 2, SGD 0.01 with poly decay, 80k
# iterations, SyncBN, FCN auxiliary head, mIoU) with the backbone swapped.
_base_ = [
    'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    './_base_/fishnet150.py',
]
model = dict(
    pretrained=None,  # mmseg's base names ResNet's open-mmlab:// weights here
    # FishNet needs sides that are multiples of 32: training crops are; test images are padded.
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    # Output stride 8, as the recipe's dilated ResNet, without dilation (docs/zoo.md): the
    # head's first feature (stride 8, 832 channels) feeds the ASPP, the body's last (stride 4,
    # 320) the decoder's low-level branch, the body's stride-8 feature (512) the auxiliary head.
    backbone=dict(_base_.fishnet_backbone, out_indices=(7, 6, 8)),
    decode_head=dict(in_channels=832, in_index=2, c1_in_channels=320),
    auxiliary_head=dict(in_channels=512, in_index=1),
)
default_hooks = dict(checkpoint=_base_.fishnet_checkpoint, non_finite=_base_.fishnet_non_finite)
train_cfg = dict(type=_base_.fishnet_train_loop)
