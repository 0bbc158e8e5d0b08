"""``tools/misc/swap_backbone.py``: the config it writes, as a user runs it, and its one-line
errors. The swap's rules are tested in tests/test_zoo/test_swap.py."""

import os.path as osp
from typing import Callable

import pytest
from mmengine.config import Config

from mmfish.testing import ROOT, import_tool
from mmfish.zoo.swap import SwapError, load, swap_backbone

swap_tool = import_tool('misc', 'swap_backbone')
RETINANET = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'


def test_writes_a_config_that_inherits_the_original(run_tool: Callable, tmp_path):
    out = tmp_path / 'retinanet_fishnet150.py'
    proc = run_tool('misc/swap_backbone.py', RETINANET, str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'model.neck.in_channels' in proc.stdout
    text = out.read_text()
    assert f"_base_ = '{RETINANET}'" in text
    cfg = Config.fromfile(str(out))
    assert cfg.model.backbone.type == 'FishNet' and cfg.model.bbox_head.type == 'RetinaHead'
    assert cfg.model.neck.in_channels == [320, 832, 1600, 2112]


def test_a_config_of_yours_is_inherited_by_its_relative_path(tmp_path):
    mine = tmp_path / 'mine' / 'retinanet_r18.py'
    mine.parent.mkdir()
    mine.write_text(
        f"_base_ = '{RETINANET}'\n"
        'model = dict(backbone=dict(depth=18, init_cfg=None), neck=dict(in_channels=[64, 128, '
        '256, 512]))\n'
    )
    out = tmp_path / 'out' / 'retinanet_fishnet99.py'
    swap_tool.main([str(mine), str(out), '--arch', 'fishnet99'])
    assert "_base_ = '../mine/retinanet_r18.py'" in out.read_text()
    cfg = Config.fromfile(str(out))
    # a ResNet without ImageNet weights: FishNet without them too
    assert cfg.model.backbone.arch == 'fishnet99' and cfg.model.backbone.init_cfg is None
    assert cfg.model.neck.in_channels == [320, 832, 1600, 2112]


def test_an_existing_output_needs_force(tmp_path):
    out = tmp_path / 'x.py'
    out.write_text('# mine\n')
    with pytest.raises(Exception, match='--force'):
        swap_tool.main([RETINANET, str(out)])
    assert out.read_text() == '# mine\n'
    swap_tool.main([RETINANET, str(out), '--force', '--no-pretrained'])
    assert 'init_cfg=None' in out.read_text()


def test_a_backbone_that_is_not_a_resnet(tmp_path):
    with pytest.raises(SwapError, match='not a ResNet'):
        swap_tool.main(
            ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', str(tmp_path / 'x.py')]
        )
    assert not osp.exists(tmp_path / 'x.py')


def test_errors_are_one_line_with_the_key(run_tool: Callable, tmp_path):
    proc = run_tool(
        'misc/swap_backbone.py',
        'mmdet::faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py',
        str(tmp_path / 'x.py'),
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'model.roi_head' in lines[0], proc.stderr[-2000:]
    assert not osp.exists(tmp_path / 'x.py')


def test_the_docs_example_is_what_the_tool_writes():
    with open(osp.join(ROOT, 'docs', 'zoo.md'), encoding='utf-8') as f:
        page = f.read()
    example = page.split('For the RetinaNet above:\n\n```\n', 1)[1].split('```', 1)[0]
    cfg, reference = load(RETINANET)
    assert example == swap_backbone(cfg, reference, 'fishnet150').text()
