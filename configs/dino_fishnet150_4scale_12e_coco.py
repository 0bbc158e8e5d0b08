# DINO (4 scales), FishNet-150, 12 epochs, COCO 2017 under data/coco/: mmdet's R-50 recipe
# (16 images per iteration = 8 GPUs x 2, AdamW 1e-4, backbone lr x0.1) with the backbone swapped.
_base_ = ['mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', './_base_/fishnet150_fpn.py']
model = dict(
    # FishNet needs sides that are multiples of 32 (DINO's recipe pads to 1).
    data_preprocessor=dict(pad_size_divisor=32),
    # the head's three features, strides 8, 16, 32, where DINO reads ResNet's C3-C5; the fourth
    # scale is the ChannelMapper's extra stride-2 convolution, as in the recipe
    backbone=dict(_base_.fishnet_backbone, out_indices=(8, 9, 10)),
    neck=dict(in_channels=_base_.fishnet_neck.in_channels[1:]),
)
# The recipe's own gradient clipping (max_norm 0.1, stricter than the R-CNN recipes' 35) is kept.
default_hooks = dict(checkpoint=_base_.fishnet_checkpoint, non_finite=_base_.fishnet_non_finite)
train_cfg = dict(type=_base_.fishnet_train_loop)
