# Faster R-CNN, FishNet-150 + FPN, 1x schedule (12 epochs), COCO 2017 under data/coco/.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    './_base_/fishnet_detection.py',
]
