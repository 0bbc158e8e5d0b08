# Test-only config: the shapes demo (Mask R-CNN + FishNet) shrunk to run in seconds on a CPU.
# A FishNet of one block per stage and narrow channels, 64 px images, 32-channel FPN and heads.
# Tests pass the dataset location (data_root, the dataloaders' data_root and the evaluators'
# ann_file) with --cfg-options. Deterministic: fixed seed, deterministic algorithms, samplers that
# take every candidate and no flips; tests/test_engine/test_fault_tolerant_training.py turns the
# demo's randomness back on (RANDOM_OPTIONS) to show that a resumed run follows the uninterrupted
# run's random path.
_base_ = ['../../configs/demo/mask_rcnn_fishnet99_fpn_shapes_cpu.py', './tiny_fishnet.py']

image_size = (64, 64)
width = 32
gn = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    backbone=dict(arch=_base_.tiny_arch),
    neck=dict(in_channels=[48, 112, 208, 272], out_channels=width, norm_cfg=gn),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=64),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, norm_cfg=gn),
    ),
    # Samplers larger than their candidate sets (1023 anchors, at most 50 proposals + the gt per
    # 64 px image) take every candidate and never call torch.randperm.
    train_cfg=dict(
        rpn=dict(sampler=dict(num=4096)),
        rpn_proposal=dict(nms_pre=200, max_per_img=50),
        rcnn=dict(sampler=dict(num=512)),
    ),
    # score_thr=0 so that even a barely trained model predicts something to evaluate.
    test_cfg=dict(rpn=dict(nms_pre=100, max_per_img=20), rcnn=dict(score_thr=0.0, max_per_img=10)),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.0),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'),
    ),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 2
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]  # fmt: skip
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='FaultTolerantCheckpointHook', interval=1, max_keep_ckpts=-1),
    visualization=dict(type='DetVisualizationHook', draw=False),
)
randomness = dict(seed=0, deterministic=True)
# fp32, as the tests expect (the demo itself trains its backbone and neck in bf16); tests of
# mixed precision ask for it with --amp.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2),
)
