_base_ = './mask_rcnn_fishnet150_fpn_1x_coco.py'
fishnet_arch = 'fishnet99'
pretrained = 'checkpoints/fishnet99_in1k_mmfish.pth'
model = dict(
    backbone=dict(arch=fishnet_arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained))
)
