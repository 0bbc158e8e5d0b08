# The image-level CPU demo (make demo-cls, tools/demo_cls.py): FishNet-99 with its score head,
# trained from scratch through MMPretrain on the generated shapes set (data/shapes_cls: one
# shape per 32x32 image, 3 balanced classes, so chance is 1/3), top-1 on the held-out split.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

classes = ('circle', 'rectangle', 'triangle')
image_size = 32  # tools/demo_cls.py generates the images at this size
num_train, num_val = 6000, 300  # and so many of them
model = dict(
    type='ImageClassifier',
    backbone=dict(type='FishNet', arch='fishnet99', out_indices=(10,), out_norm=False),
    neck=None,
    head=dict(
        type='FishNetClsHead',
        num_classes=len(classes),
        in_channels=2112,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1,),
        # The reference's initialisation (std sqrt(2 / out_channels)) suits 1000 classes; with 3
        # its last 1x1 conv starts with logits in the tens. Small weights start them near 0.
        init_cfg=dict(type='Normal', layer='Conv2d', std=0.01),
    ),
)
data_preprocessor = dict(
    num_classes=len(classes),
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)
data_root = 'data/shapes_cls/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        classes=classes,
        pipeline=train_pipeline,
    ),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=100,
    num_workers=0,
    dataset=dict(
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        classes=classes,
        pipeline=test_pipeline,
    ),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1,))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05))
# Few passes over many generated images: on this small set they beat more passes over fewer
# (docs/classification.md, the classification demo).
max_epochs = 7
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, T_max=max_epochs, begin=0, end=max_epochs),
]
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='FaultTolerantCheckpointHook', interval=max_epochs),
    non_finite=dict(type='NonFiniteStepHook', max_consecutive=20),
)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0, deterministic=True)
