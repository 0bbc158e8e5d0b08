# mmdet's Faster R-CNN R-50-FPN 1x: the baseline of the FishNet Faster R-CNN configs
# in tools/coco_benchmark.py. custom_imports loads mmfish, so this run gets the same tools
# (checkpoint loading under torch >= 2.6, data checks, CPU distributed) as the FishNet runs.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)
# The one change: gradient clipping as the FishNet configs have it, so that the two runs differ
# in the backbone alone (the paper's comparison).
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
