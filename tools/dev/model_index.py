"""Write ``model-index.yml`` and the metafiles listing every mmfish config, in MMDetection's format.

    python tools/dev/model_index.py

Every config under ``configs/`` but the ``_base_`` folders is one model of
``configs/metafile.yml`` (detection), ``configs/segmentation/metafile.yml`` (segmentation) or
``configs/classification/metafile.yml`` (classification), named after its file. Read from the
config: the collection (the detector, the decode head, or FishNet's own classifier), the
backbone, the training data, the schedule and the ImageNet weights file its backbone starts from
(``init_cfg.checkpoint``, the converted file the config expects). Measured on the built model,
with random weights, on the CPU:

- **Parameters**: the whole model;
- **FLOPs**: mmengine's ``FlopAnalyzer`` (one multiply-accumulate counts as one FLOP, as mmdet's
  ``get_flops.py``), batch 1. Detection: backbone + neck on an 800x1216 image (the heads' cost
  depends on the proposals a random model makes; ``tools/analysis_tools/collect_results.py``
  counts the same); segmentation: the whole inference forward (backbone, neck, decode head) on
  the config's training crop (``crop_size``; the demo: its ``image_size``), but backbone + neck
  for Mask2Former, whose decode head needs the data samples; classification: the whole forward
  to the logits at 224x224 (the demo: its ``image_size``).

No Results: a model gets them when someone runs its config on its dataset and adds them.
"""

import argparse
import logging
import os
import os.path as osp
import sys
import textwrap
from typing import Dict, List, Optional, Tuple

import torch
import yaml
from mmengine.config import Config
from mmengine.logging import MMLogger

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))  # benchmark_backbone, collect_results

from benchmark_backbone import count_macs  # noqa: E402
from collect_results import FeatureExtractor, describe_backbone  # noqa: E402

import mmfish  # noqa: E402,F401  (FishNet in mmdet's and mmseg's registries)

MODEL_INDEX = 'model-index.yml'
DETECTION = 'configs/metafile.yml'
SEGMENTATION = 'configs/segmentation/metafile.yml'
CLASSIFICATION = 'configs/classification/metafile.yml'
CLASSIFICATION_FLOPS_SIZE = 224
DETECTION_FLOPS_SHAPE = (800, 1216)

COLLECTIONS = {
    'Faster R-CNN': dict(
        paper='https://arxiv.org/abs/1506.01497', architecture=['RPN', 'FPN', 'RoIAlign']
    ),
    'Mask R-CNN': dict(
        paper='https://arxiv.org/abs/1703.06870', architecture=['RPN', 'FPN', 'RoIAlign']
    ),
    'Semantic FPN': dict(paper='https://arxiv.org/abs/1901.02446', architecture=['FPN']),
    'UPerNet': dict(
        paper='https://arxiv.org/abs/1807.10221', architecture=['Pyramid Pooling Module', 'FPN']
    ),
    # the other model families (docs/zoo.md)
    'RetinaNet': dict(paper='https://arxiv.org/abs/1708.02002', architecture=['FPN', 'Focal Loss']),
    'FCOS': dict(
        paper='https://arxiv.org/abs/1904.01355', architecture=['FPN', 'Group Normalization']
    ),
    'Cascade Mask R-CNN': dict(
        paper='https://arxiv.org/abs/1906.09756', architecture=['RPN', 'FPN', 'RoIAlign']
    ),
    'DINO': dict(paper='https://arxiv.org/abs/2203.03605', architecture=['Deformable DETR']),
    'Mask2Former': dict(
        paper='https://arxiv.org/abs/2112.01527', architecture=['Multi-Scale Deformable Attention']
    ),
    'PSPNet': dict(
        paper='https://arxiv.org/abs/1612.01105', architecture=['Pyramid Pooling Module']
    ),
    'DeepLabV3+': dict(paper='https://arxiv.org/abs/1802.02611', architecture=['ASPP']),
    'FishNet': dict(paper='https://arxiv.org/abs/1901.03495', architecture=['Score Head']),
}
DETECTORS = {
    'FasterRCNN': 'Faster R-CNN',
    'MaskRCNN': 'Mask R-CNN',
    'RetinaNet': 'RetinaNet',
    'FCOS': 'FCOS',
    'CascadeRCNN': 'Cascade Mask R-CNN',
    'DINO': 'DINO',
    'Mask2Former': 'Mask2Former',
}
DECODE_HEADS = {
    'FPNHead': 'Semantic FPN',
    'UPerHead': 'UPerNet',
    'PSPHead': 'PSPNet',
    'DepthwiseSeparableASPPHead': 'DeepLabV3+',
    'Mask2FormerHead': 'Mask2Former',
}
# decode heads whose forward takes the data samples: their segmentors' FLOPs are counted on the
# backbone and neck
SEG_HEADS_NEEDING_SAMPLES = ('Mask2FormerHead',)
DATASETS = {
    'CocoDataset': 'COCO',
    'CityscapesDataset': 'Cityscapes',
    'ADE20KDataset': 'ADE20K',
    'BaseSegDataset': 'shapes (generated)',
    'ImageNet': 'ImageNet-1k',
    'CustomDataset': 'shapes (generated)',
}
HEADER = (
    "mmfish {what} configs, in MMDetection's metafile format (gathered by model-index.yml). "
    'Written by `python tools/dev/model_index.py`, which builds each model with random weights '
    "on the CPU: Parameters of the whole model; FLOPs by mmengine's FlopAnalyzer (one "
    'multiply-accumulate = one FLOP, batch 1) of {flops} (FLOPs Counted), on an image of FLOPs '
    "Input (height x width). ImageNet Weights: the converted file the config's backbone starts "
    'from; none when it trains from scratch. No Results: none of these configs has been run on '
    'its dataset here.'
)


def config_files() -> List[str]:
    """Every config under configs/ (relative, '/'-separated), the _base_ folders left out."""
    found = []
    for folder, dirs, files in os.walk(osp.join(ROOT, 'configs')):
        dirs[:] = sorted(d for d in dirs if d not in ('_base_', '__pycache__'))
        found += [osp.relpath(osp.join(folder, f), ROOT).replace(os.sep, '/') for f in files]
    # the configs/ folder's own configs first, then its subfolders'
    return sorted((f for f in found if f.endswith('.py')), key=lambda f: (f.count('/'), f))


def is_segmentation(config: str) -> bool:
    return config.startswith('configs/segmentation/')


def is_classification(config: str) -> bool:
    return config.startswith('configs/classification/')


def metafile(config: str) -> str:
    if is_segmentation(config):
        return SEGMENTATION
    return CLASSIFICATION if is_classification(config) else DETECTION


def imagenet_weights(backbone: dict) -> Optional[str]:
    """The checkpoint of the backbone's ``Pretrained`` init, None from scratch."""
    init = backbone.get('init_cfg') or {}
    return init.get('checkpoint') if init.get('type') == 'Pretrained' else None


def counts_features_only(cfg: Config) -> bool:
    """Whether a segmentor's FLOPs are its backbone's and neck's only: a decode head whose
    forward needs the data samples (Mask2Former's) cannot be run on an image alone."""
    return cfg.model.decode_head.type in SEG_HEADS_NEEDING_SAMPLES


def flops_shape(cfg: Config, config: str) -> Tuple[int, int]:
    if is_classification(config):
        size = cfg.get('image_size', CLASSIFICATION_FLOPS_SIZE)
        return size, size
    if not is_segmentation(config):
        return DETECTION_FLOPS_SHAPE
    size = cfg.get('crop_size') or cfg.get('image_size')
    return int(size[0]), int(size[1])


def describe(config: str, cfg: Config) -> dict:
    """The metafile entry of one config, without the measured figures."""
    model = cfg.model
    if is_segmentation(config):
        collection = DECODE_HEADS[model.decode_head.type]
        what = 'backbone + neck' if counts_features_only(cfg) else 'whole inference forward'
    elif is_classification(config):
        collection = 'FishNet'
        what = 'whole forward (logits)'
    else:
        collection = DETECTORS[model.type]
        what = 'backbone + neck'
    dataset = cfg.train_dataloader.dataset
    while 'dataset' in dataset:  # wrappers (RepeatDataset, ...)
        dataset = dataset.dataset
    data = DATASETS[dataset.type]
    if data == 'COCO' and 'shapes' in str(dataset.get('data_root', '')):
        data = 'shapes (generated)'
    schedule = (
        {'Epochs': cfg.train_cfg.max_epochs}
        if 'max_epochs' in cfg.train_cfg
        else {'Iterations': cfg.train_cfg.max_iters}
    )
    height, width = flops_shape(cfg, config)
    return {
        'Name': osp.splitext(osp.basename(config))[0],
        'In Collection': collection,
        'Config': config,
        'Metadata': {
            'Backbone': describe_backbone(model.backbone)[0],
            'Training Data': data,
            **schedule,
            'ImageNet Weights': imagenet_weights(model.backbone) or 'none (from scratch)',
            'Parameters': None,
            'FLOPs': None,
            'FLOPs Input': f'{height}x{width}',
            'FLOPs Counted': what,
        },
    }


def measure(config: str, cfg: Config) -> Tuple[int, int]:
    """(parameters, FLOPs) of the config's model, built with random weights."""
    height, width = flops_shape(cfg, config)
    if is_segmentation(config):
        from mmseg.registry import MODELS

        model = MODELS.build(cfg.model)
        counted = FeatureExtractor(model) if counts_features_only(cfg) else model
    elif is_classification(config):
        from mmpretrain.registry import MODELS

        model = MODELS.build(cfg.model)
        counted = model
    else:
        from mmdet.registry import MODELS

        model = MODELS.build(cfg.model)
        counted = FeatureExtractor(model)
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        flops = count_macs(counted, height, width, torch.device('cpu'))
    return params, int(flops)


def collections(models: List[dict]) -> List[dict]:
    used = list(dict.fromkeys(m['In Collection'] for m in models))
    return [
        {
            'Name': name,
            'Metadata': {
                'Training Data': sorted(
                    {m['Metadata']['Training Data'] for m in models if m['In Collection'] == name}
                ),  # fmt: skip
                'Architecture': [
                    *sorted(
                        {
                            m['Metadata']['Backbone'].split('-')[0]
                            for m in models
                            if m['In Collection'] == name
                        }
                    ),  # fmt: skip
                    *COLLECTIONS[name]['architecture'],
                ],
            },
            'Paper': COLLECTIONS[name]['paper'],
        }
        for name in used
    ]


def write(path: str, what: str, flops: str, models: List[dict]) -> None:
    body = yaml.safe_dump(
        {'Collections': collections(models), 'Models': models},
        sort_keys=False,
        width=100,
        allow_unicode=True,
    )
    header = textwrap.fill(HEADER.format(what=what, flops=flops), 98, initial_indent='# ',
                           subsequent_indent='# ')  # fmt: skip
    with open(osp.join(ROOT, path), 'w', encoding='utf-8') as f:
        f.write(header + '\n\n' + body)
    print(f'wrote {path} ({len(models)} models)')


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split('\n\n')[0]).parse_args()
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    torch.manual_seed(0)
    metafiles: Dict[str, List[dict]] = {DETECTION: [], SEGMENTATION: [], CLASSIFICATION: []}
    for config in config_files():
        cfg = Config.fromfile(osp.join(ROOT, config))
        entry = describe(config, cfg)
        params, flops = measure(config, cfg)
        entry['Metadata']['Parameters'] = params
        entry['Metadata']['FLOPs'] = flops
        print(f'{config}: {params / 1e6:.2f} M parameters, {flops / 1e9:.1f} GFLOPs', flush=True)
        metafiles[metafile(config)].append(entry)
    write(DETECTION, 'detection', 'backbone + neck', metafiles[DETECTION])
    write(
        SEGMENTATION,
        'segmentation',
        'the whole inference forward (Mask2Former: backbone + neck, its head needs the data '
        'samples)',
        metafiles[SEGMENTATION],
    )
    write(CLASSIFICATION, 'classification', 'the whole forward', metafiles[CLASSIFICATION])
    with open(osp.join(ROOT, MODEL_INDEX), 'w', encoding='utf-8') as f:
        f.write(
            '# The model index of mmfish (read by mmfish::NAME and OpenMMLab MIM): one metafile\n'
            '# per config family. Written by python tools/dev/model_index.py.\n'
        )
        f.write(
            yaml.safe_dump({'Import': [DETECTION, SEGMENTATION, CLASSIFICATION]}, sort_keys=False)
        )
    print(f'wrote {MODEL_INDEX}')


if __name__ == '__main__':
    main()
