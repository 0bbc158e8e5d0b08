# Mask2Former (semantic segmentation), FishNet-150, ADE20K (150 classes) under
# data/ade/ADEChallengeData2016/: mmseg's own R-50 recipe (512x512 crops, 16 images per iteration
# = 8 GPUs x 2, AdamW 1e-4 with backbone lr x0.1 and gradient clipping, 160k iterations, mIoU)
# with the backbone swapped.
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    './_base_/fishnet150.py',
]
model = dict(
    # the body's last feature and the head's three (strides 4, 8, 16, 32): the pixel decoder
    # reads four levels
    backbone=dict(_base_.fishnet_backbone, out_indices=(7, 8, 9, 10)),
    decode_head=dict(in_channels=[320, 832, 1600, 2112]),
)
default_hooks = dict(checkpoint=_base_.fishnet_checkpoint)
train_cfg = dict(type=_base_.fishnet_train_loop)
