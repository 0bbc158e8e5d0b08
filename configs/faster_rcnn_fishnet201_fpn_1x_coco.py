_base_ = './faster_rcnn_fishnet150_fpn_1x_coco.py'
# No supported ImageNet start exists for FishNet-201 today: the authors publish only the
# well-trained file, whose layout cannot be mapped exactly (docs/weights.md). Convert a
# FishNet-201 checkpoint in the authors' reference layout to this path, or train from scratch with
# configs/faster_rcnn_fishnet201_fpn_gn-all_scratch_6x_coco.py (not comparable to the paper's
# ImageNet start).
checkpoint = 'checkpoints/fishnet201_in1k_mmfish.pth'
model = dict(backbone=dict(arch='fishnet201', init_cfg=dict(checkpoint=checkpoint)))
