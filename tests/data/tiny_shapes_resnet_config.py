# Test-only config: tests/data/tiny_shapes_config.py with a tiny mmdet ResNet-18 (8 base channels)
# in place of the tiny FishNet: the ResNet baseline, in miniature, that tools/coco_benchmark.py and
# tools/analysis_tools/collect_results.py pair with the FishNet run (same detector, Mask R-CNN).
_base_ = './tiny_shapes_config.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=18,
        base_channels=8,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None,
    ),
    neck=dict(in_channels=[8, 16, 32, 64]),
)
