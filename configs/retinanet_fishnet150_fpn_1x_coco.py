# RetinaNet, FishNet-150 + FPN, 1x schedule (12 epochs), COCO 2017 under data/coco/.
# 16 images per iteration (8 GPUs x 2); --auto-scale-lr rescales lr for other batch sizes.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/fishnet150_fpn.py']
model = dict(backbone=_base_.fishnet_backbone, neck=_base_.fishnet_neck)
optim_wrapper = dict(clip_grad=_base_.fishnet_clip_grad)
default_hooks = dict(checkpoint=_base_.fishnet_checkpoint, non_finite=_base_.fishnet_non_finite)
train_cfg = dict(type=_base_.fishnet_train_loop)
