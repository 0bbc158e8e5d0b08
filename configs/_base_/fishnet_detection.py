# Shared by the COCO configs: mmfish, the FishNet backbone from ImageNet weights, the FPN input,
# and the paper's training aids (linear warm-up from mmdet's 1x schedule, gradient clipping).
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

# tools/model_converters/fishnet2mmdet.py writes this file from the authors' checkpoint;
# see README "ImageNet weights". --cfg-options model.backbone.init_cfg=None trains from scratch.
fishnet_arch = 'fishnet150'
pretrained = 'checkpoints/fishnet150_in1k_mmfish.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='FishNet',
        arch=fishnet_arch,
        out_indices=(7, 8, 9, 10),  # body's last feature + head: strides 4, 8, 16, 32
        out_norm=True,
        frozen_stages=1,  # stem and the first tail stage, as mmdet's ResNet configs do
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    # FishNet.out_channels for out_indices (7, 8, 9, 10); tests/test_configs.py checks them.
    neck=dict(in_channels=[320, 832, 1600, 2112]),
)

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
