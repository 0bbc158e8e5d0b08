_base_ = './upernet_fishnet150_4xb4-160k_ade20k-512x512.py'
fishnet_arch = 'fishnet201'
pretrained = 'checkpoints/fishnet201_in1k_mmfish.pth'
model = dict(
    backbone=dict(arch=fishnet_arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained))
)
