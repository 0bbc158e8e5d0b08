# FishNet-150 as a segmentation backbone: the settings every mmfish mmseg config shares. A config
# names this file beside mmseg's R-50 config and takes `fishnet_backbone` /
# `fishnet_out_channels` / `fishnet_checkpoint` / `fishnet_train_loop` from it
# (`_base_.fishnet_backbone`: mmengine forbids duplicate keys among bases, so these are
# variables, not `model`); a variant changes `arch` and the checkpoint.
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

# The detection configs' ImageNet start (configs/_base_/fishnet150_fpn.py): pytorchcv's
# fishnet150-0475-93e26daa.pth (80.74% top-1, the strongest published), converted by
# tools/model_converters/fishnet2mmdet.py (docs/weights.md). Another file:
# --cfg-options model.backbone.init_cfg.checkpoint=PATH; init_cfg=None trains from scratch.
pretrained = 'checkpoints/fishnet150_pytorchcv_in1k_mmfish.pth'
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
# = FishNet.out_channels for these out_indices
# (tests/test_configs/test_segmentation_configs.py checks it)
fishnet_out_channels = [320, 512, 768]
# Fault-tolerant training, as the detection configs have it (docs/training.md, "Fault tolerance
# and resume"): checkpoints written atomically, with the random states and the data loader's
# position, and on SIGTERM (exit status 75); a resumed run continues on the uninterrupted run's
# data and random path (each sample's augmentation seeded from (seed, epoch, index): the loop's
# default seeded_augmentation=True; bad samples skipped and reported, up to max_bad_samples).
# Configs take them as `default_hooks = dict(checkpoint=_base_.fishnet_checkpoint)` and
# `train_cfg = dict(type=_base_.fishnet_train_loop)` (mmseg's iteration settings are kept).
fishnet_checkpoint = dict(type='FaultTolerantCheckpointHook')
# Optimizer steps whose loss or gradient is NaN or inf are skipped (weights unchanged), logged with
# the losses at fault; 20 in a row stop the run (docs/training.md, "Non-finite steps"). Configs
# take it as `default_hooks = dict(non_finite=_base_.fishnet_non_finite)`; opt out with
# --cfg-options default_hooks.non_finite=None.
fishnet_non_finite = dict(type='NonFiniteStepHook', max_consecutive=20)
fishnet_train_loop = 'ResumableIterBasedTrainLoop'
