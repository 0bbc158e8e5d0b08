# Mask2Former (instance segmentation), FishNet-150, COCO 2017 under data/coco/: mmdet's R-50
# recipe (1024 px large-scale jitter, 16 images per iteration = 8 GPUs x 2, AdamW 1e-4 with
# backbone lr x0.1, 368750 iterations) with the backbone swapped.
_base_ = ['mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py', './_base_/fishnet150_fpn.py']
model = dict(
    backbone=_base_.fishnet_backbone,
    # the pixel decoder reads the four features (strides 4, 8, 16, 32) through the head
    panoptic_head=dict(in_channels=_base_.fishnet_neck.in_channels),
)
# The recipe's own gradient clipping (max_norm 0.01) is kept; its iterations resume mid-run.
default_hooks = dict(checkpoint=_base_.fishnet_checkpoint, non_finite=_base_.fishnet_non_finite)
train_cfg = dict(type='ResumableIterBasedTrainLoop')
