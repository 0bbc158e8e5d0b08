"""mmfish installed from its wheel, used from another directory.

Builds the wheel (``pip wheel --no-deps --no-build-isolation``) from a copy of this checkout,
installs it into a temporary folder (``pip install --no-deps --target``) and, with that folder
as the only ``PYTHONPATH`` entry and another directory as the working directory (this checkout
nowhere on ``sys.path``; the shared environment's own mmfish install is shadowed), checks that:

- ``mmfish`` is imported from the temporary folder and reads its files from ``mmfish/.mim/``,
  which holds the configs, the user tools and the model index, and not the checkout-only tools;
- an error message names the console command and the ``mmfish::`` config (not checkout paths);
- ``mmfish-train`` trains one step of a user config whose ``_base_`` is
  ``mmfish::mask_rcnn_fishnet150_fpn_1x_coco.py``, with a tiny FishNet on 64 px images;
- ``mmfish-test --help`` and ``mmfish-convert --help`` run.
"""

import os
import os.path as osp
import shutil
import subprocess
import sys
from typing import Dict, List

import pytest

from mmfish.models import FishNet
from mmfish.testing import ROOT, tiny_arch

# Left out of the copy the wheel is built from: what the build does not read (and the build's own
# output of earlier runs, which setuptools would otherwise ship again).
SKIP_AT_TOP = {'.git', '.venv', 'build', 'dist', 'data', 'work_dirs', 'checkpoints', 'tests'}
SKIP_ANYWHERE = {'__pycache__', '.mim', '.pytest_cache', '.ruff_cache'}

USER_CONFIG = """\
_base_ = 'mmfish::mask_rcnn_fishnet150_fpn_1x_coco.py'

data_root = {data_root!r}
metainfo = dict(classes=('circle', 'rectangle', 'triangle'))
model = dict(
    backbone=dict(arch={arch!r}, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels={in_channels!r}),
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
)
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        indices=2,  # one iteration
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='Resize', scale=(64, 64), keep_ratio=True),
            dict(type='PackDetInputs'),
        ],
    ),
)
val_dataloader = None
val_evaluator = None
val_cfg = None
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
"""

CHECK = """\
import mmfish
from mmfish.models import FishNet
from mmfish.utils import mim

print('FILE', mmfish.__file__)
print('FILES', mim.files_root())
model = FishNet('fishnet99', init_cfg=dict(type='Pretrained', checkpoint='fishnet99_in1k.pth'))
try:
    model.init_weights()
except FileNotFoundError as error:
    print('MESSAGE', ' '.join(str(error).split()))
"""


def copy_source(target: str) -> None:
    def ignore(folder: str, names: List[str]) -> set:
        skipped = {n for n in names if n in SKIP_ANYWHERE or n.endswith('.egg-info')}
        if osp.abspath(folder) == ROOT:
            skipped |= SKIP_AT_TOP & set(names)
        return skipped

    shutil.copytree(ROOT, target, ignore=ignore)


def run(cmd: List[str], env: Dict[str, str], cwd: str) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f'{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
    return done


@pytest.mark.slow
def test_installed_wheel_trains_an_mmfish_base_config_from_another_directory(tmp_path, tiny_shapes):
    source, dist, site, cwd = (str(tmp_path / d) for d in ('source', 'dist', 'site', 'cwd'))
    copy_source(source)
    os.makedirs(cwd)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP', 'MMFISH_DEBUG')
    }
    env.update(
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHONNOUSERSITE='1',
        PIP_NO_INDEX='1',  # nothing from the network
        PIP_DISABLE_PIP_VERSION_CHECK='1',
    )
    pip = [sys.executable, '-m', 'pip']
    run([*pip, 'wheel', '--no-deps', '--no-build-isolation', '-w', dist, source], env, cwd)
    (wheel,) = os.listdir(dist)
    run([*pip, 'install', '--no-deps', '--no-compile', '--target', site, osp.join(dist, wheel)],
        env, cwd)  # fmt: skip
    env['PYTHONPATH'] = site  # the only way to this mmfish; the checkout is nowhere on sys.path
    bin_dir = osp.join(site, 'bin')

    # What the wheel ships, and what it does not.
    mim_dir = osp.join(site, 'mmfish', '.mim')
    for shipped in (
        'model-index.yml',
        'configs/metafile.yml',
        'configs/mask_rcnn_fishnet150_fpn_1x_coco.py',
        'configs/_base_/fishnet150_fpn.py',
        'configs/segmentation/_base_/fishnet150.py',
        'tools/train.py',
        'tools/test.py',
        'tools/dist_train.sh',
        'tools/model_converters/fishnet2mmdet.py',
    ):
        assert osp.isfile(osp.join(mim_dir, shipped)), shipped
    for left_out in ('tools/dev', 'tools/setup_env.sh', 'tools/demo.py', 'tools/patches'):
        assert not osp.exists(osp.join(mim_dir, left_out)), left_out
    assert not osp.exists(osp.join(site, 'tests'))

    # The commands start while the checks below run (two cores: at most two at once).
    helps = {
        command: subprocess.Popen(
            [osp.join(bin_dir, command), '--help'],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in ('mmfish-test', 'mmfish-convert')
    }

    # mmfish from the temporary folder, its files from .mim, messages for this install.
    lines = run([sys.executable, '-c', CHECK], env, cwd).stdout.splitlines()
    found = dict(line.split(' ', 1) for line in lines if line.split(' ', 1)[0].isupper())
    assert found['FILE'] == osp.join(site, 'mmfish', '__init__.py')
    assert found['FILES'] == mim_dir
    message = found['MESSAGE']
    assert '`mmfish-convert fishnet99_ckpt.tar fishnet99_in1k.pth --arch fishnet99`' in message
    assert 'mmfish::mask_rcnn_fishnet99_fpn_gn-all_scratch_6x_coco.py' in message
    assert 'tools/' not in message and 'configs/' not in message

    for command, process in helps.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f'{command} --help failed:\n{err[-3000:]}'
        assert out.startswith(f'usage: {command} '), out[:200]

    # One training step of a user config on an mmfish:: base, from the other directory.
    in_channels = list(FishNet(tiny_arch()).out_channels)
    arch = tiny_arch(_delete_=True)  # replaces the base's arch='fishnet150'
    config = osp.join(cwd, 'my_fishnet_config.py')
    with open(config, 'w') as f:
        f.write(
            USER_CONFIG.format(
                data_root=tiny_shapes.rstrip('/') + '/', arch=arch, in_channels=in_channels
            )
        )
    trained = run(
        [osp.join(bin_dir, 'mmfish-train'), 'my_fishnet_config.py', '--work-dir', 'work'], env, cwd
    )
    log = trained.stdout + trained.stderr
    assert 'Epoch(train) [1][1/1]' in log and 'loss: ' in log, log[-3000:]
    assert osp.isfile(osp.join(cwd, 'work', 'epoch_1.pth'))
