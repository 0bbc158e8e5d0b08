# The segmentation demo: Semantic FPN with FishNet-99, from scratch, on the label maps of the
# generated "shapes" set (data/shapes/seg_maps, made by tools/demo_seg.py or
# tools/misc/generate_shapes_coco.py): background + circle, rectangle, triangle, 256 px images.
# Sized for a 2-core CPU (recipe and measured result: docs/segmentation.md, "The segmentation
# demo"): whole images resized to 128 px (shapes whole, the cost of a 128 px crop), GN in the
# backbone, FPN and head (per-image statistics: the backgrounds' colours vary from image to
# image, and BN's running statistics lagged), background weighted 0.25 in the cross-entropy
# (81% of the pixels), batch 4, AdamW 2e-3 with warm-up then poly decay, bf16 autocast in the
# backbone and neck, 1800 iterations. tools/demo_seg.py runs it.
_base_ = ['mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

data_root = 'data/shapes/'
metainfo = dict(
    classes=('background', 'circle', 'rectangle', 'triangle'),
    palette=[(0, 0, 0), (220, 20, 60), (0, 128, 255), (0, 170, 0)],
)
# GN: FishNet-99's layers have multiples of 16 channels, the 128-wide FPN and head of 32
backbone_norm = dict(type='GN', num_groups=16, requires_grad=True)
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
width = 128

model = dict(
    pretrained=None,
    data_preprocessor=dict(size_divisor=32, test_cfg=dict(size_divisor=32)),
    backbone=dict(
        _delete_=True,
        type='FishNet',
        arch='fishnet99',
        # the body's three features, strides 4, 8, 16 (the head is not built): against the
        # head's and the detection pyramid, the best val mIoU and the cheapest step
        # (tools/analysis_tools/seg_feature_choice.py, docs/segmentation.md)
        out_indices=(7, 6, 5),
        out_norm=True,
        norm_cfg=backbone_norm,
        norm_eval=False,
        init_cfg=None,  # the reference initialisation: this demo trains from scratch
    ),
    neck=dict(in_channels=[320, 512, 768], out_channels=width, num_outs=3, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[width] * 3,
        in_index=[0, 1, 2],
        feature_strides=[4, 8, 16],
        channels=width,
        num_classes=4,
        norm_cfg=norm_cfg,
        # background (about 81% of the pixels) weighted down, so that the network leaves the
        # background prior sooner
        loss_decode=dict(class_weight=[0.25, 1.0, 1.0, 1.0]),
    ),
)

dataset_common = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.png',
    seg_map_suffix='.png',
    reduce_zero_label=False,
)
# Whole images at half size for training and testing: a circle, a rectangle and a triangle are
# told apart by their whole outline, which random crops cut; 128 px is the cost of a 128 px crop.
# mmseg's IoUMetric compares the predictions, resized back, with the 256 px label maps.
image_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations'),  # after Resize: the label maps keep their 256 px
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='train', seg_map_path='seg_maps/train'),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='val', seg_map_path='seg_maps/val'),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 1800
# fault-tolerant, as every mmfish config (docs/training.md, "Fault tolerance and resume"):
# --resume continues on the uninterrupted run's data and random path
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=max_iters, val_interval=300)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    # bf16 autocast in the backbone and neck, the head in fp32 (mmfish's, as the detection demo)
    type='PartialAmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=30, end=max_iters),
]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='FaultTolerantCheckpointHook', by_epoch=False, interval=max_iters),
    # NaN / inf steps skipped, 20 in a row stop the run (docs/training.md, "Non-finite steps")
    non_finite=dict(type='NonFiniteStepHook', max_consecutive=20),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # GT (left) beside the prediction (right) for every 5th val batch, at each evaluation, under
    # <work_dir>/<timestamp>/vis_data/vis_image/
    visualization=dict(type='SegVisualizationHook', draw=True, interval=5),
)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=False)
