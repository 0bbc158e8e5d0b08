_base_ = './mask_rcnn_fishnet150_fpn_1x_coco.py'
fishnet_arch = 'fishnet201'
pretrained = 'checkpoints/fishnet201_in1k_mmfish.pth'
model = dict(
    backbone=dict(arch=fishnet_arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained))
)
