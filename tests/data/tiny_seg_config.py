# Test-only config: the segmentation demo (Semantic FPN + FishNet) shrunk to run in seconds on a
# CPU: a FishNet of one block per stage and narrow channels, 16-channel FPN and head, BN (the
# demo's GN groups do not divide these channels), fp32, a few iterations. Tests pass the dataset
# location with --cfg-options (data_root of each dataloader).
_base_ = ['../../configs/segmentation/demo/fpn_fishnet99_shapes_cpu.py', './tiny_fishnet.py']

width = 16
bn = dict(_delete_=True, type='BN', requires_grad=True)
model = dict(
    backbone=dict(arch=_base_.tiny_arch, norm_cfg=bn),
    neck=dict(in_channels=[48, 64, 96], out_channels=width, norm_cfg=bn),
    decode_head=dict(in_channels=[width] * 3, channels=width, norm_cfg=bn),
)
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=2)
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2),
)
max_iters = 6
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=2, end=max_iters),
]
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=max_iters),
    visualization=dict(draw=False),
)
randomness = dict(seed=0, deterministic=True)
