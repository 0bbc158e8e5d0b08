# UPerNet, FishNet-150, ADE20K (150 classes) under data/ade/ADEChallengeData2016/: mmseg's own
# R-50 recipe (512x512 crops, 16 images per iteration = 4 GPUs x 4, SGD 0.01 with poly decay,
# 160k iterations, SyncBN, FCN auxiliary head, mIoU) with the backbone swapped.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py', './_base_/fishnet150.py']
model = dict(
    pretrained=None,  # mmseg's base names ResNet's open-mmlab:// weights here
    # FishNet needs sides that are multiples of 32: training crops are; ADE20K's test images
    # (short side 512, any aspect ratio) are padded, and the logits cropped back.
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    backbone=_base_.fishnet_backbone,
    # three levels (strides 4, 8, 16; the pyramid pooling on the stride-16 feature)
    decode_head=dict(in_channels=_base_.fishnet_out_channels, in_index=[0, 1, 2]),
    # on the stride-16 feature, as mmseg's ResNet configs put it on C4
    auxiliary_head=dict(in_channels=768, in_index=2),
)
default_hooks = dict(checkpoint=_base_.fishnet_checkpoint, non_finite=_base_.fishnet_non_finite)
train_cfg = dict(type=_base_.fishnet_train_loop)
