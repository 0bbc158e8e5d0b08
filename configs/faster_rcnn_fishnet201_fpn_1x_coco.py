_base_ = './faster_rcnn_fishnet150_fpn_1x_coco.py'
checkpoint = 'checkpoints/fishnet201_in1k_mmfish.pth'
model = dict(backbone=dict(arch='fishnet201', init_cfg=dict(checkpoint=checkpoint)))
