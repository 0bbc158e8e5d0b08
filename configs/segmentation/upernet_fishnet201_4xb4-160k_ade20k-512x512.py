_base_ = './upernet_fishnet150_4xb4-160k_ade20k-512x512.py'
fishnet_arch = 'fishnet201'
# No supported ImageNet start exists for FishNet-201 today: the authors publish only the
# well-trained file, whose layout cannot be mapped exactly (docs/weights.md). Convert a
# FishNet-201 checkpoint in the authors' reference layout to this path (the detection configs'
# too), or train from scratch with --cfg-options model.backbone.init_cfg=None (this backbone
# freezes nothing and trains its norms; not comparable to an ImageNet start).
pretrained = 'checkpoints/fishnet201_in1k_mmfish.pth'
model = dict(
    backbone=dict(arch=fishnet_arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained))
)
