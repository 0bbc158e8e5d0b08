# FishNet on ImageNet-1k with MMPretrain: the authors' plain recipe (github.com/kevin-ssy/FishNet,
# main.py and cfgs/fishnet150.yaml): 8 GPUs x 32 images, SGD lr 0.1 momentum 0.9, weight decay
# 1e-4 on every weight and bias, lr x0.1 every 30 epochs, 100 epochs; RandomResizedCrop 224,
# horizontal flip, their colour noise; tested at 224 after resizing the short side to 256.
# docs/classification.md says where mmpretrain's transforms differ from torchvision's.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    # The last feature (the head's, stride 32), raw: the score head starts with its own norm.
    backbone=dict(type='FishNet', arch='fishnet150', out_indices=(10,), out_norm=False),
    neck=None,
    head=dict(
        type='FishNetClsHead',
        num_classes=1000,
        in_channels=2112,  # FishNet(...).out_channels[-1] (tests check it for each config)
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5),
    ),
)

data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],  # the reference's normalisation, on the 0-255 scale
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='FishNetLighting', alphastd=0.1),  # the reference's ColorAugmentation
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
# data/imagenet/{train,val}/<class>/<image> (ImageFolder's layout), or with meta/{train,val}.txt
train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(
        type='ImageNet', data_root='data/imagenet', split='train', pipeline=train_pipeline
    ),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type='ImageNet', data_root='data/imagenet', split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
# mmfish's fault-tolerant loop and checkpoints (docs/training.md), as in its detection configs.
train_cfg = dict(type='ResumableEpochBasedTrainLoop', max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    checkpoint=dict(type='FaultTolerantCheckpointHook', interval=1),
    non_finite=dict(type='NonFiniteStepHook', max_consecutive=20),  # steps with NaN / inf skipped
)
# lr 0.1 is for 8 x 32 images: --auto-scale-lr scales it to another total batch size.
auto_scale_lr = dict(base_batch_size=256)
