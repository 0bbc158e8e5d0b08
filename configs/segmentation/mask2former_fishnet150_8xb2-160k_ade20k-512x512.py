# Mask2Former (semantic segmentation), FishNet-150, ADE20K (150 classes) under
# data/ade/ADEChallengeData2016/: mmseg's own R-50 recipe (512x512 crops, 16 images per iteration
# = 8 GPUs x 2, AdamW 1e-4 with backbone lr x0.1 and gradient clipping, 160k iterations, mIoU)
# with the backbone swapped. mmseg's recipe and ./_base_/fishnet150.py both set custom_imports,
# and mmengine refuses a key that two bases define: so this config inherits the recipe alone and
# states the FishNet-150 settings of ./_base_/fishnet150.py itself
# (tests/test_zoo/test_zoo_configs.py checks that they are the same).
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdet.models', 'mmfish'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        _delete_=True,  # replaces mmseg's ResNet-50 settings
        type='FishNet',
        arch='fishnet150',
        # the body's last feature and the head's three (strides 4, 8, 16, 32): the pixel
        # decoder reads four levels
        out_indices=(7, 8, 9, 10),
        out_norm=True,
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint='checkpoints/fishnet150_pytorchcv_in1k_mmfish.pth'
        ),
    ),
    decode_head=dict(in_channels=[320, 832, 1600, 2112]),
)
default_hooks = dict(
    checkpoint=dict(type='FaultTolerantCheckpointHook'),
    non_finite=dict(type='NonFiniteStepHook', max_consecutive=20),  # as ./_base_/fishnet150.py
)
train_cfg = dict(type='ResumableIterBasedTrainLoop')
