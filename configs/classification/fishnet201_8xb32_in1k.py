# fishnet201 on ImageNet-1k, the authors' plain 100-epoch recipe (_base_/fishnet_in1k.py).
#   python tools/train.py configs/classification/fishnet201_8xb32_in1k.py
_base_ = ['./_base_/fishnet_in1k.py']
model = dict(backbone=dict(arch='fishnet201'))
