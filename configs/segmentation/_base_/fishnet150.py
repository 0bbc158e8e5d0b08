# FishNet-150 as a segmentation backbone: the settings every mmfish mmseg config shares. A config
# names this file beside mmseg's R-50 config and takes `fishnet_backbone` /
# `fishnet_out_channels` from it (`_base_.fishnet_backbone`: mmengine forbids duplicate keys among
# bases, so these are variables, not `model`); a variant changes `arch` and the checkpoint.
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

# tools/model_converters/fishnet2mmdet.py writes this file from the authors' ImageNet checkpoint
# (docs/weights.md); --cfg-options model.backbone.init_cfg=None trains from scratch.
pretrained = 'checkpoints/fishnet150_in1k_mmfish.pth'
fishnet_backbone = dict(
    _delete_=True,  # replaces mmseg's ResNet-50 settings
    type='FishNet',
    arch='fishnet150',
    # the body's three features, strides 4, 8, 16 (the head is not built): measured on the
    # shapes data against the head's features and the detection pyramid (docs/segmentation.md,
    # "Which features feed the decoder")
    out_indices=(7, 6, 5),
    out_norm=True,
    frozen_stages=-1,  # as mmseg's ResNet configs: nothing frozen, norms trained
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    norm_eval=False,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained),
)
# = FishNet.out_channels for these out_indices (tests/test_segmentation.py checks it)
fishnet_out_channels = [320, 512, 768]
