# The embedded default: Mask R-CNN with FishNet-99, from scratch, on the generated "shapes" set
# (data/shapes, made by tools/demo.py or tools/misc/generate_shapes_coco.py), sized to learn in
# minutes on a 2-core CPU: 256 px images, FPN and heads 128 channels wide, fewer proposals and
# sampled RoIs, GN in the neck and mask head, AdamW with warm-up then cosine.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

data_root = 'data/shapes/'
metainfo = dict(
    classes=('circle', 'rectangle', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (0, 170, 0)],
)
image_size = (256, 256)
width = 128
gn = dict(type='GN', num_groups=32, requires_grad=True)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='FishNet',
        arch='fishnet99',
        out_indices=(7, 8, 9, 10),
        out_norm=True,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None,  # the reference initialisation: this demo trains from scratch
    ),
    neck=dict(in_channels=[320, 832, 1600, 2112], out_channels=width, norm_cfg=gn),
    rpn_head=dict(in_channels=width, feat_channels=width),
    # mmcv's CPU RoIAlign is single-threaded; with sampling_ratio=0 (adaptive) a large RoI
    # samples up to 64 points per bin. Two points per bin side, as mmdet 1.x's sample_num=2.
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width, roi_layer=dict(sampling_ratio=2)),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=width, roi_layer=dict(sampling_ratio=2)),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=3, norm_cfg=gn),
    ),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128)),
    ),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20),
    ),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
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
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    batch_sampler=None,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'],
    classwise=True,
)
test_evaluator = val_evaluator

max_epochs = 4
# One evaluation, after the last epoch: the demo's time goes to training. The loop seeds each
# sample's augmentation from (seed, epoch, index) (seeded_augmentation=True, its default), so that
# --resume is exact at any iteration (docs/training.md, "Fault tolerance and resume").
train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs
)
optim_wrapper = dict(
    _delete_=True,
    # bf16 autocast in the backbone and neck (heads and mmcv's ops in fp32), on a CPU or a GPU.
    # What the demo reaches, with its command and machine: docs/development.md, "The CPU demo".
    type='PartialAmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]  # fmt: skip
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='FaultTolerantCheckpointHook', interval=1, max_keep_ckpts=3),
    # NaN / inf steps skipped, 20 in a row stop the run (docs/training.md, "Non-finite steps")
    non_finite=dict(type='NonFiniteStepHook', max_consecutive=20),
)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0, deterministic=False)
# Pictures of predictions on every 5th val image, at the evaluation, under the work dir
# (<work_dir>/<timestamp>/vis_data/vis_image/).
# Boxes scoring >= 0.6 are drawn: far more of them match an object (IoU >= 0.5, right class)
# than at mmdet's default 0.3 (measured: docs/development.md, "The CPU demo").
default_hooks.update(
    visualization=dict(type='DetVisualizationHook', draw=True, interval=5, score_thr=0.6)
)
