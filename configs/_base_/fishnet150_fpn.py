# FishNet-150 as an FPN backbone, fine-tuned from the authors' ImageNet weights: the settings that
# every mmfish COCO config shares. A detector config names this file beside mmdet's R-50 config
# and takes `fishnet_backbone` / `fishnet_neck` from it (`_base_.fishnet_backbone`); a variant
# config inherits the FishNet-150 one and changes `arch` and the checkpoint.
custom_imports = dict(imports=['mmfish'], allow_failed_imports=False)

# ImageNet start (docs/weights.md; top-1 as published by each source), converted with
# tools/model_converters/fishnet2mmdet.py SOURCE DEST:
#   pytorchcv fishnet150-0475-93e26daa.pth (80.74%, recommended)
#       -> checkpoints/fishnet150_pytorchcv_in1k_mmfish.pth (the default below)
#   authors' fishnet150_ckpt_welltrained.tar (79.35%)
#       -> checkpoints/fishnet150_welltrained_in1k_mmfish.pth
#   authors' fishnet150_ckpt.tar (78.14%) -> checkpoints/fishnet150_in1k_mmfish.pth
# Another file: --cfg-options model.backbone.init_cfg.checkpoint=PATH. Without ImageNet weights,
# train with the *_gn-all_scratch_6x_coco.py configs (`fishnet_scratch_backbone` below):
# init_cfg=None alone would keep the frozen stem and the frozen BatchNorm statistics set here.
pretrained = 'checkpoints/fishnet150_pytorchcv_in1k_mmfish.pth'
fishnet_backbone = dict(
    _delete_=True,  # replaces mmdet's ResNet-50 settings
    type='FishNet',
    arch='fishnet150',
    out_indices=(7, 8, 9, 10),  # body's last feature + head: strides 4, 8, 16, 32
    # Each returned feature through norm + ReLU. Loaded from a converted checkpoint, these are
    # the network's own trained norms of each feature (docs/backbone.md, "Fine-tuning and
    # out_norm").
    out_norm=True,
    frozen_stages=1,  # stem and first tail stage, as mmdet's ResNet configs freeze
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    init_cfg=dict(type='Pretrained', checkpoint=pretrained),
)
# From scratch, as mmdet's scratch/ configs train ResNet-50 (docs/training.md, "Training from
# scratch"): the reference initialisation, nothing frozen, GroupNorm trained in every layer (the
# out norms too). 16 groups: FishNet's norms have 16 to 2112 channels, 80, 208 and 400 among
# them, which 32 groups (mmdet's, kept in the neck and heads) do not divide.
fishnet_scratch_backbone = dict(
    fishnet_backbone,
    frozen_stages=-1,
    norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
    norm_eval=False,
    init_cfg=None,
)
# = FishNet.out_channels for these out_indices
# (tests/test_configs/test_detection_configs.py checks it)
fishnet_neck = dict(in_channels=[320, 832, 1600, 2112])
# The paper trains detectors with warm-up (mmdet's 1x schedule: linear, 500 iterations) and
# gradient clipping.
fishnet_clip_grad = dict(max_norm=35, norm_type=2)
# Fault-tolerant training (docs/training.md, "Fault tolerance and resume"): checkpoints written
# atomically, with the random states, and on SIGTERM; a resumed run continues mid-epoch on the
# same random path, persistent workers included (the loop seeds each sample's augmentation from
# (seed, epoch, index): seeded_augmentation=True, its default; bad samples are skipped and
# reported, up to max_bad_samples, default 0.1% of the dataset).
# Detector configs take them as `default_hooks = dict(checkpoint=_base_.fishnet_checkpoint)` and
# `train_cfg = dict(type=_base_.fishnet_train_loop)` (mmdet's names are not redefined here:
# mmengine refuses a key that two bases both define).
fishnet_checkpoint = dict(type='FaultTolerantCheckpointHook')
# Optimizer steps whose loss or gradient is NaN or inf are skipped (weights unchanged), logged with
# the losses at fault; 20 in a row stop the run (docs/training.md, "Non-finite steps"). Configs
# take it as `default_hooks = dict(non_finite=_base_.fishnet_non_finite)`; opt out with
# --cfg-options default_hooks.non_finite=None.
fishnet_non_finite = dict(type='NonFiniteStepHook', max_consecutive=20)
fishnet_train_loop = 'ResumableEpochBasedTrainLoop'
