"""Train a detector or a segmentor with mmfish: mmdet 3.3's ``tools/train.py`` flags, plus CPU
mixed precision.

    python tools/train.py configs/mask_rcnn_fishnet150_fpn_1x_coco.py [--work-dir DIR] [--amp]
        [--auto-scale-lr] [--resume [CKPT]] [--cfg-options k=v ...] [--launcher pytorch|slurm]
    python tools/train.py configs/segmentation/fpn_fishnet150_4xb2-80k_cityscapes-512x1024.py

Installed from a wheel, ``mmfish-train`` runs this tool with the same flags. CONFIG may also name a
shipped config, ``mmfish::mask_rcnn_fishnet150_fpn_1x_coco.py``, or an mmdet one (``mmdet::...``).

Both are mmengine runs: the config's ``default_scope`` (mmdet or mmseg) picks the toolbox.

``--amp`` is bf16 autocast on a CPU (bf16 needs no loss scaling) and fp16 with dynamic loss
scaling on a GPU, as in mmdet.

Exit status 75: stopped by SIGTERM (preemption) after writing a checkpoint of the last finished
iteration (mmfish configs, ``FaultTolerantCheckpointHook``); run again with ``--resume``.
Exit status 130: stopped by Ctrl-C (SIGINT), after writing the same checkpoint; a second Ctrl-C
aborts at once, without one.
Exit status 2: a bad argument, a missing file, bad data or weights that do not fit the model,
reported as one line with the fix before anything is written (``--debug`` or ``MMFISH_DEBUG=1``
shows the traceback).
Exit status 1: training stopped on an error: too many non-finite steps in a row, a checkpoint
that could not be written (one line), or a traceback.
Under ``tools/dist_train.sh`` each process also writes its exit status to the file named by
``MMFISH_EXIT_STATUS_FILE``: torchrun reports any failed process as 1, the script exits with it.
"""

import argparse
import copy
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, RUNNERS, DefaultScope
from mmengine.runner import Runner

import mmfish  # noqa: F401  (registers FishNet; lets torch >= 2.6 load mmengine checkpoints)
from mmfish.datasets.cls_checks import check_cls_data
from mmfish.datasets.data_checks import check_coco_annotations
from mmfish.datasets.seg_checks import check_seg_data
from mmfish.engine.optimizers.amp import configure_amp
from mmfish.engine.runner.dist import setup_cpu_distributed
from mmfish.models.backbones.fishnet import FishNet
from mmfish.models.backbones.fishnet_pretrained import PretrainedMismatchError
from mmfish.models.backbones.model_checkpoint import check_model_checkpoint
from mmfish.utils.cli import CliError, add_debug_argument, read_config, run_cli, user_errors
from mmfish.utils.io import write_text_atomically
from mmfish.utils.mim import config_reference, resolve_config
from mmfish.utils.paths import checkpoint_exists

EXIT_STATUS_FILE = 'MMFISH_EXIT_STATUS_FILE'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor')
    parser.add_argument('config', help='train config file path, or mmfish::NAME')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision: bf16 on CPU, fp16 on GPU'
    )
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='scale lr by total batch size / base'
    )
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or without a path from the latest in the work dir',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value (e.g. model.backbone.init_cfg=None)',
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_debug_argument(parser)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_model(cfg: Config, config_path: str) -> None:
    """Build the config's model once and check its FishNet ``Pretrained`` files, before the
    Runner writes anything (work dir, log, dumped config).

    A model that cannot be built from the config, a missing weights file, or one that holds
    another variant stop here, as one line. The model built here is thrown away; training builds
    its own (and reads the weights again).
    """
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        try:
            model = MODELS.build(copy.deepcopy(cfg.model))
        except user_errors():
            raise
        except Exception as error:
            raise CliError(
                f'the model of {config_path} cannot be built: {type(error).__name__}: {error}. '
                'Fix the model settings of the config (or the --cfg-options that change them)'
            ) from error
    for module in model.modules():
        if not isinstance(module, FishNet) or module.init_cfg is None:
            continue
        try:
            module.init_weights()  # reads and checks a Pretrained file as training will
        except PretrainedMismatchError as error:
            raise _with_sibling_config(error, config_path) from error


def _with_sibling_config(error: PretrainedMismatchError, config_path: str) -> Exception:
    """``error``, naming the config of the file's variant beside the user's, where there is one."""
    held, own = error.file_variant, error.model_variant
    name = osp.basename(config_path)
    if not held or not own or held == own or own not in name:
        return error
    sibling = osp.join(osp.dirname(config_path), name.replace(own, held))
    if not osp.isfile(sibling):
        return error
    example = f'(e.g. {config_reference(f"mask_rcnn_{held}_fpn_1x_coco.py")})'
    text = str(error)
    if example in text:
        text = text.replace(example, f'({sibling}, the {held} version of this config)', 1)
    else:
        text += f' The {held} version of this config: {sibling}.'
    return PretrainedMismatchError(text, own, held)


def main() -> None:
    args = parse_args()
    args.config = resolve_config(args.config)  # mmfish::NAME (or mmdet::...) -> its file
    if not osp.isfile(args.config):
        raise CliError(f'config file {args.config} does not exist')
    if args.resume not in (None, 'auto') and not checkpoint_exists(args.resume):
        raise CliError(
            f'--resume {args.resume}: no such checkpoint file. Give an existing one, or '
            '--resume without a path to continue from the latest checkpoint of the work dir'
        )
    cfg = read_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        configure_amp(cfg)

    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise CliError(
                '--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=N) in the config (N: '
                'the total batch size its learning rate was set for); add it or drop the flag'
            )

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    check_coco_annotations(cfg)  # bad data fails here, naming the file, before any run
    check_seg_data(cfg)  # the same for segmentation label maps
    check_cls_data(cfg)  # and for classification image folders
    check_model(cfg, args.config)  # the model's settings and its ImageNet weights
    if cfg.get('load_from'):  # a whole model's checkpoint: of the config's FishNet variant
        check_model_checkpoint(cfg, cfg.load_from, args.config)
    setup_cpu_distributed(cfg)  # gloo, CPU DDP and BN for SyncBN when there is no CUDA
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


def record_exit_status(code: object) -> None:
    """Write a non-zero exit status to ``$MMFISH_EXIT_STATUS_FILE`` (set by dist_train.sh)."""
    path = os.environ.get(EXIT_STATUS_FILE)
    if path and isinstance(code, int) and code != 0:
        write_text_atomically(path, f'{code}\n')


if __name__ == '__main__':
    try:
        run_cli(main)
    except SystemExit as stop:
        record_exit_status(stop.code)
        raise
