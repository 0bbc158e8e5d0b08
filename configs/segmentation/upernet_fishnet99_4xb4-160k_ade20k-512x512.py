_base_ = './upernet_fishnet150_4xb4-160k_ade20k-512x512.py'
fishnet_arch = 'fishnet99'
# ImageNet start, as the detection configs': the authors' fishnet99_ckpt.tar (77.41% top-1),
# converted with tools/model_converters/fishnet2mmdet.py (docs/weights.md).
pretrained = 'checkpoints/fishnet99_in1k_mmfish.pth'
model = dict(
    backbone=dict(arch=fishnet_arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained))
)
