_base_ = './fpn_fishnet150_4xb2-80k_cityscapes-512x1024.py'
fishnet_arch = 'fishnet99'
# ImageNet start, as the detection configs': the authors' fishnet99_ckpt.tar (77.41% top-1),
# converted with tools/model_converters/fishnet2mmdet.py (docs/weights.md).
pretrained = 'checkpoints/fishnet99_in1k_mmfish.pth'
model = dict(
    backbone=dict(arch=fishnet_arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained))
)
