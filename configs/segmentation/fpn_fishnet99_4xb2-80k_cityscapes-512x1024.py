_base_ = './fpn_fishnet150_4xb2-80k_cityscapes-512x1024.py'
fishnet_arch = 'fishnet99'
pretrained = 'checkpoints/fishnet99_in1k_mmfish.pth'
model = dict(
    backbone=dict(arch=fishnet_arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained))
)
