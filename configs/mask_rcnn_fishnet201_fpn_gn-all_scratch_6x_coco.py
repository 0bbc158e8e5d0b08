_base_ = './mask_rcnn_fishnet150_fpn_gn-all_scratch_6x_coco.py'
model = dict(backbone=dict(arch='fishnet201'))
