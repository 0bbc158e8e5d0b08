# Mask R-CNN, FishNeXt-150 + FPN, 1x schedule, COCO 2017: the FishNet-150 config with the grouped
# residual blocks of FishNeXt-150 (docs/backbone.md, "FishNeXt"). No ImageNet weights exist for
# FishNeXt (the authors published none), so its backbone trains from scratch here: nothing frozen,
# norms in train mode. Expect far less than an ImageNet-initialised backbone gives on a 1x schedule
# (mmdet's from-scratch baselines train 6x, with GN); pass init_cfg to start from weights of your
# own ImageNet training.
_base_ = './mask_rcnn_fishnet150_fpn_1x_coco.py'
model = dict(backbone=dict(arch='fishnext150', frozen_stages=-1, norm_eval=False, init_cfg=None))
