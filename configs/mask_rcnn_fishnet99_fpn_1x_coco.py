_base_ = './mask_rcnn_fishnet150_fpn_1x_coco.py'
# ImageNet start: the authors' fishnet99_ckpt.tar (77.41% top-1), converted with
# tools/model_converters/fishnet2mmdet.py (docs/weights.md).
checkpoint = 'checkpoints/fishnet99_in1k_mmfish.pth'
model = dict(backbone=dict(arch='fishnet99', init_cfg=dict(checkpoint=checkpoint)))
