_base_ = './mask_rcnn_fishnet150_fpn_1x_coco.py'
# No supported ImageNet start exists for FishNet-201 today: the authors publish only the
# well-trained file, whose layout cannot be mapped exactly (README, "ImageNet weights"). Convert a
# reference-layout checkpoint to this path, or train from scratch with
# --cfg-options model.backbone.init_cfg=None (not comparable to the paper's ImageNet start).
checkpoint = 'checkpoints/fishnet201_in1k_mmfish.pth'
model = dict(backbone=dict(arch='fishnet201', init_cfg=dict(checkpoint=checkpoint)))
