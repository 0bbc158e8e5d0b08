# Faster R-CNN, FishNet-150 + FPN trained from scratch (no ImageNet weights), COCO 2017 under
# data/coco/: mmdet's configs/scratch/ recipe (He et al., "Rethinking ImageNet Pre-training")
# with FishNet for ResNet-50: GroupNorm in backbone, neck and heads (a 4conv1fc box head), nothing
# frozen, norms trained, 6x schedule (73 epochs, steps at 65 and 71, 500-iteration warm-up), no
# weight decay on norms. 16 images per iteration (8 GPUs x 2); --auto-scale-lr rescales lr.
_base_ = [
    'mmdet::scratch/faster-rcnn_r50-scratch_fpn_gn-all_6x_coco.py',
    './_base_/fishnet150_fpn.py',
]
model = dict(backbone=_base_.fishnet_scratch_backbone, neck=_base_.fishnet_neck)
optim_wrapper = dict(clip_grad=_base_.fishnet_clip_grad)
default_hooks = dict(
    checkpoint=_base_.fishnet_checkpoint,  # keeps mmdet's max_keep_ckpts=3
    non_finite=_base_.fishnet_non_finite,
)
train_cfg = dict(type=_base_.fishnet_train_loop)
