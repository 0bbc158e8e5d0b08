"""``mmfish::`` config names, the shipped files' lookup and the console commands
(:mod:`mmfish.utils.mim`, :mod:`mmfish.tools_entry`), from a checkout.

The installed wheel is tested end to end in test_wheel_install.py.
"""

import ast
import os.path as osp
import sys

import pytest
from mmengine.config import Config

import mmfish
from mmfish import tools_entry
from mmfish.testing import ROOT
from mmfish.utils import mim

FISHNET150 = 'mask_rcnn_fishnet150_fpn_1x_coco.py'


def user_config(tmp_path, text: str) -> str:
    path = tmp_path / 'user_config.py'
    path.write_text(text)
    return str(path)


def test_this_checkout_serves_the_files():
    assert mmfish.__file__.startswith(ROOT)
    assert mim.is_checkout() and mim.files_root() == ROOT
    assert mim.tool_path('train.py') == osp.join(ROOT, 'tools', 'train.py')


def test_an_mmfish_base_reads_as_its_file(tmp_path):
    """``_base_ = 'mmfish::X'`` gives the config ``_base_ = '<checkout>/configs/X'`` gives."""
    by_name = Config.fromfile(user_config(tmp_path, f"_base_ = 'mmfish::{FISHNET150}'\n"))
    by_path = Config.fromfile(
        user_config(tmp_path, f'_base_ = {osp.join(ROOT, "configs", FISHNET150)!r}\n')
    )
    assert by_name.to_dict() == by_path.to_dict()
    assert by_name.model.backbone.type == 'FishNet'


def test_a_model_name_resolves_through_the_model_index(tmp_path):
    """A segmentation config by its model name, which is no path under configs/."""
    name = 'fpn_fishnet150_4xb2-80k_cityscapes-512x1024'
    assert not osp.exists(osp.join(ROOT, 'configs', f'{name}.py'))
    expected = osp.join(ROOT, 'configs', 'segmentation', f'{name}.py')
    assert mim.config_path(f'mmfish::{name}') == expected
    cfg = Config.fromfile(
        user_config(tmp_path, f"_base_ = 'mmfish::{name}.py'\nmodel = dict(pretrained=None)\n")
    )
    assert cfg.model.backbone.type == 'FishNet' and cfg.model.decode_head.type == 'FPNHead'


def test_a_path_in_a_subfolder_resolves():
    path = 'segmentation/_base_/fishnet150.py'
    assert mim.config_path(f'mmfish::{path}') == osp.join(ROOT, 'configs', path)


def test_an_unknown_name_says_what_names_a_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'mmfish::nope\.py names no mmfish config.*'):
        Config.fromfile(user_config(tmp_path, "_base_ = 'mmfish::nope.py'\n"))


def test_other_packages_are_left_to_mmengine():
    path, scope = Config._get_cfg_path('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', '')
    assert scope == 'mmdet' and path.endswith('mask-rcnn_r50_fpn_1x_coco.py')
    assert Config._get_cfg_path('./x.py', '/a/b.py') == ('/a/./x.py', None)


def test_registering_twice_wraps_once():
    patched = Config._get_cfg_path
    mim.register_config_scope()
    assert Config._get_cfg_path is patched


def test_resolve_config_for_the_tools():
    assert mim.resolve_config('configs/x.py') == 'configs/x.py'  # a path, unchanged
    assert mim.resolve_config(f'mmfish::{FISHNET150}') == osp.join(ROOT, 'configs', FISHNET150)
    with pytest.raises(FileNotFoundError, match='config nopkg::a/b.py cannot be found'):
        mim.resolve_config('nopkg::a/b.py')


def test_commands_name_what_a_checkout_has():
    assert mim.tool_command('model_converters/fishnet2mmdet.py') == (
        'python tools/model_converters/fishnet2mmdet.py'
    )
    assert mim.tool_command('dist_train.sh') == 'bash tools/dist_train.sh'
    assert mim.config_reference('x_{arch}.py') == 'configs/x_{arch}.py'


def test_commands_name_what_an_installed_wheel_has(monkeypatch):
    monkeypatch.setattr(mim, 'is_checkout', lambda: False)
    assert mim.tool_command('model_converters/fishnet2mmdet.py') == 'mmfish-convert'
    assert mim.tool_command('train.py') == 'mmfish-train'
    assert mim.tool_command('dist_train.sh') == (
        f'bash {osp.join(mim.MIM_DIR, "tools", "dist_train.sh")}'
    )
    assert mim.config_reference('x_{arch}.py') == 'mmfish::x_{arch}.py'


def test_no_files_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(mim, 'is_checkout', lambda: False)
    monkeypatch.setattr(mim, 'MIM_DIR', str(tmp_path / '.mim'))
    with pytest.raises(FileNotFoundError, match='reinstall it with `pip install'):
        mim.files_root()


def test_setup_installs_every_console_command():
    """setup.py's entry points are the commands mmfish.utils.mim knows, each a function."""
    tree = ast.parse(open(osp.join(ROOT, 'setup.py')).read())
    scripts = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == 'CONSOLE_SCRIPTS'
    )
    entries = dict(s.split('=') for s in scripts)
    assert set(entries) == set(mim.COMMANDS)
    for target in entries.values():
        module, function = target.split(':')
        assert module == 'mmfish.tools_entry' and callable(getattr(tools_entry, function))


def test_a_command_runs_its_tool_under_its_own_name(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['mmfish-train'])
    monkeypatch.setattr(sys, 'path', list(sys.path))
    caller = sys.modules['__main__']
    with pytest.raises(SystemExit) as stop:
        tools_entry.run_tool('mmfish-train', ['--help'])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith('usage: mmfish-train ') and '--resume' in out  # tools/train.py's
    assert sys.modules['__main__'] is caller  # the tool ran as __main__, then gave it back
    assert sys.path[0] == osp.join(ROOT, 'tools')  # as `python tools/train.py` has it
