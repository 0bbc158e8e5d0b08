# Semantic FPN, FishNet-150, Cityscapes (19 classes) under data/cityscapes/: mmseg's own R-50
# recipe (512x1024 crops, 8 images per iteration = 4 GPUs x 2, SGD 0.01 with poly decay, 80k
# iterations, SyncBN, mIoU) with the backbone swapped.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py', './_base_/fishnet150.py']
model = dict(
    pretrained=None,  # mmseg's base names ResNet's open-mmlab:// weights here
    # FishNet needs sides that are multiples of 32: training crops are; test images are padded.
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    backbone=_base_.fishnet_backbone,
    # three levels (strides 4, 8, 16) where mmseg's R-50 config has four
    neck=dict(in_channels=_base_.fishnet_out_channels, num_outs=3),
    decode_head=dict(in_channels=[256] * 3, in_index=[0, 1, 2], feature_strides=[4, 8, 16]),
)
default_hooks = dict(checkpoint=_base_.fishnet_checkpoint, non_finite=_base_.fishnet_non_finite)
train_cfg = dict(type=_base_.fishnet_train_loop)
