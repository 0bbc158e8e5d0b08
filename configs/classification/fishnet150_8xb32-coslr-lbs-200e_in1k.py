# fishnet150 on ImageNet-1k, the authors' "well-trained" recipe: their plain one with a cosine
# learning rate over 200 epochs and label smoothing (docs/classification.md says what was chosen
# where they do not say: smoothing 0.1, cosine to 0 with no warm-up).
_base_ = ['./fishnet150_8xb32_in1k.py']
model = dict(
    head=dict(
        loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    )
)
param_scheduler = dict(
    _delete_=True, type='CosineAnnealingLR', by_epoch=True, T_max=200, begin=0, end=200, eta_min=0
)
train_cfg = dict(max_epochs=200)
