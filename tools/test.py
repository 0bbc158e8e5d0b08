"""Test (and evaluate) a detector or a segmentor with mmfish: mmdet 3.3's ``tools/test.py`` flags.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
        [--tta] [--amp] [--cfg-options k=v ...] [--launcher pytorch|slurm]

Installed from a wheel, ``mmfish-test`` runs this tool with the same flags. CONFIG may also name a
shipped config, ``mmfish::mask_rcnn_fishnet150_fpn_1x_coco.py``, or an mmdet one (``mmdet::...``).

Segmentation configs (``default_scope='mmseg'``) take the same flags: ``--out`` dumps the data
samples (with ``pred_sem_seg``) to a .pkl file, ``--show-dir DIR`` saves ground truth beside
prediction under ``DIR/vis_data/vis_image/`` (mmseg's convention), ``--tta`` uses the config's
``tta_model`` / ``tta_pipeline`` (mmseg's: multi-scale and flip).

``--amp`` runs inference under autocast: bf16 on a CPU, fp16 on a GPU.

``--tta`` on a detector that predicts masks (Mask R-CNN) is refused before anything is built:
mmdet 3.3's ``DetTTAModel`` merges boxes only and stops with "TTA of instance segmentation does
not support now" once the first batch is predicted. Arguments are checked before anything is
written; a bad one (or a missing file, or bad data) ends with a one-line error and status 2
(``--debug`` or ``MMFISH_DEBUG=1`` shows the traceback).
"""

import argparse
import os
import os.path as osp
import warnings
from copy import deepcopy
from typing import Any, List

import torch
from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet.evaluation import DumpDetResults
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import mmfish  # noqa: F401  (registers FishNet; lets torch >= 2.6 load mmengine checkpoints)
from mmfish.datasets.cls_checks import check_cls_data
from mmfish.datasets.data_checks import check_coco_annotations
from mmfish.datasets.seg_checks import check_seg_data
from mmfish.engine.optimizers.amp import cpu_autocast
from mmfish.engine.runner.dist import setup_cpu_distributed
from mmfish.models.backbones.model_checkpoint import check_model_checkpoint
from mmfish.utils.cli import CliError, add_debug_argument, read_config, run_cli
from mmfish.utils.mim import resolve_config
from mmfish.utils.paths import checkpoint_exists

DUMP_SUFFIXES = ('.pkl', '.pickle')  # what mmdet's and mmseg's test.py accept for --out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector or a segmentor')
    parser.add_argument('config', help='test config file path, or mmfish::NAME')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', type=str, help='dump predictions to a .pkl (or .pickle) file')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='dir (inside the work dir) to save painted images')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--amp', action='store_true', help='autocast: bf16 on CPU, fp16 on GPU')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation (flip; boxes only: refused for a model with a mask head)',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_argument(parser)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def is_segmentation(cfg: Config) -> bool:
    """Whether a config is an mmseg one (its runner builds from mmseg's registries)."""
    return cfg.get('default_scope') == 'mmseg'


def trigger_seg_visualization_hook(cfg: Config, args: argparse.Namespace) -> Config:
    """Turn on mmseg's ``SegVisualizationHook`` for every test image, as mmseg's test.py does."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks to use --show or --show-dir: '
            "add visualization=dict(type='SegVisualizationHook') to default_hooks in the config"
        )
    hook['draw'] = True
    hook['interval'] = 1
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir
    return cfg


def mask_heads(model: Any, path: str = 'model') -> List[str]:
    """Where a model config sets a ``mask_head`` (e.g. ``model.roi_head.mask_head``)."""
    found: List[str] = []
    if isinstance(model, dict):
        for key, value in model.items():
            if key == 'mask_head' and value is not None:
                found.append(f'{path}.{key}')
            else:
                found += mask_heads(value, f'{path}.{key}')
    elif isinstance(model, (list, tuple)):
        for i, value in enumerate(model):
            found += mask_heads(value, f'{path}[{i}]')
    return found


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad arguments before the config is read (the checkpoint: after the data checks)."""
    if not osp.isfile(args.config):
        raise CliError(f'config file {args.config} does not exist')
    if args.out is not None and not args.out.endswith(DUMP_SUFFIXES):
        raise CliError(
            f'--out must name a .pkl or .pickle file (the predictions are pickled data samples), '
            f'got {args.out!r}: e.g. --out {osp.splitext(args.out)[0]}.pkl'
        )


def check_checkpoint(checkpoint: str) -> None:
    """Refuse a checkpoint path that names no file (URLs are left to mmengine)."""
    if not checkpoint_exists(checkpoint):
        raise CliError(
            f'checkpoint {checkpoint} does not exist: give the .pth file written by training '
            '(e.g. work_dirs/<config name>/epoch_12.pth)'
        )


def check_tta(cfg: Config) -> None:
    """Refuse ``--tta`` for a detector that predicts masks, which mmdet 3.3 cannot merge."""
    heads = mask_heads(cfg.model)
    if heads:
        raise CliError(
            f'--tta cannot test this model: it predicts masks ({", ".join(heads)}), and mmdet '
            "3.3's DetTTAModel merges boxes only (it stops with 'TTA of instance segmentation "
            "does not support now'). Test without --tta, or test a detector without a mask head "
            '(e.g. Faster R-CNN)'
        )


def add_flip_tta(cfg: Config) -> None:
    """Wrap the model for test-time augmentation, as mmdet's test.py does."""
    if 'tta_model' not in cfg:
        warnings.warn(
            'Cannot find ``tta_model`` in config, we will set it as default.', stacklevel=2
        )
        cfg.tta_model = dict(
            type='DetTTAModel',
            tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100),
        )
    if 'tta_pipeline' not in cfg:
        warnings.warn(
            'Cannot find ``tta_pipeline`` in config, we will set it as default.', stacklevel=2
        )
        test_data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in test_data_cfg:
            test_data_cfg = test_data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
        flip_tta = dict(
            type='TestTimeAug',
            transforms=[
                [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
                [
                    dict(
                        type='PackDetInputs',
                        meta_keys=(
                            'img_id',
                            'img_path',
                            'ori_shape',
                            'img_shape',
                            'scale_factor',
                            'flip',
                            'flip_direction',
                        ),
                    )  # fmt: skip
                ],
            ],
        )
        cfg.tta_pipeline[-1] = flip_tta
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main() -> None:
    args = parse_args()
    args.config = resolve_config(args.config)  # mmfish::NAME (or mmdet::...) -> its file
    check_args(args)
    cfg = read_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint
    segmentation = is_segmentation(cfg)
    if args.tta and not segmentation:
        check_tta(cfg)
    if args.show or args.show_dir:
        trigger = trigger_seg_visualization_hook if segmentation else trigger_visualization_hook
        cfg = trigger(cfg, args)
    if args.tta:
        add_flip_tta(cfg)
    if args.amp and torch.cuda.is_available():
        cfg.test_cfg = {**cfg.get('test_cfg', {}), 'fp16': True}

    check_coco_annotations(cfg, ('test_dataloader',), ('test_evaluator',))
    check_seg_data(cfg, ('test_dataloader',))
    check_cls_data(cfg, ('test_dataloader',))
    check_checkpoint(args.checkpoint)  # still before the runner writes anything
    check_model_checkpoint(cfg, args.checkpoint, args.config)  # of the config's FishNet variant
    setup_cpu_distributed(cfg)  # gloo, CPU DDP and BN for SyncBN when there is no CUDA
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out is not None:
        dump = DumpResults if segmentation else DumpDetResults
        runner.test_evaluator.metrics.append(dump(out_file_path=args.out))
    if args.amp and not torch.cuda.is_available():
        # mmcv's CPU ops are fp32-only: bf16 autocast in the backbone and neck (engine.optimizers)
        with cpu_autocast(runner.model, torch.bfloat16):
            runner.test()
    else:
        runner.test()


if __name__ == '__main__':
    run_cli(main)
