_base_ = './mask_rcnn_fishnet150_fpn_1x_coco.py'
checkpoint = 'checkpoints/fishnet99_in1k_mmfish.pth'
model = dict(backbone=dict(arch='fishnet99', init_cfg=dict(checkpoint=checkpoint)))
