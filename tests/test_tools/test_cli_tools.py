"""What a user meets on the command line: --help everywhere, one-line errors before anything is
written, no foreign warnings, and the small tool fixes (benchmark, profiler, mmcv check)."""

import json
import os
import os.path as osp
import subprocess
import sys
from typing import Callable, Dict, List

import pytest
import torch

from mmfish.testing import ROOT, TINY_CONFIG, import_tool

COCO_CONFIG = osp.join(ROOT, 'configs', 'mask_rcnn_fishnet150_fpn_1x_coco.py')
PKG_RESOURCES_WARNING = 'pkg_resources is deprecated'


def tool_files() -> List[str]:
    """Every runnable tool in the repository: the tracked .py and .sh files under tools/."""
    out = subprocess.run(
        ['git', 'ls-files', 'tools'], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [p for p in out.stdout.split() if p.endswith(('.py', '.sh'))]


TOOLS = tool_files()


def error_lines(proc: subprocess.CompletedProcess) -> List[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------- --help
# Each python tool's ``--help`` runs as ``python TOOL --help`` would run it (``runpy`` with
# ``__name__ == '__main__'``, the tool's folder first on sys.path), all in one subprocess so that
# torch and mmengine are imported once: about 5 s instead of a minute for a process per tool.
HELP_RUNNER = """
import contextlib, io, json, os, runpy, sys
results = {}
for path in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    sys.argv = [path, '--help']
    sys.path.insert(0, os.path.dirname(path))
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(path, run_name='__main__')
    except SystemExit as exit_:
        code = exit_.code or 0
    except BaseException as error:  # the report says what went wrong
        code = f'{type(error).__name__}: {error}'
    finally:
        sys.path.pop(0)
    results[path] = [code, out.getvalue()[:2000], err.getvalue()[-2000:]]
print('HELP-RESULTS' + json.dumps(results))
"""


@pytest.fixture(scope='module')
def help_runs(tool_env: Dict[str, str], run_tool: Callable) -> Dict[str, list]:
    """``[exit status, stdout, stderr]`` of ``TOOL --help`` for every tool."""
    python_tools = [p for p in TOOLS if p.endswith('.py')]
    proc = subprocess.run(
        [sys.executable, '-c', HELP_RUNNER, *(osp.join(ROOT, p) for p in python_tools)],
        cwd=ROOT, env=tool_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert 'HELP-RESULTS' in proc.stdout, proc.stderr[-3000:]
    found = json.loads(proc.stdout.split('HELP-RESULTS', 1)[1])
    runs = {p: found[osp.join(ROOT, p)] for p in python_tools}
    for path in (p for p in TOOLS if p.endswith('.sh')):
        sh = run_tool(osp.relpath(path, 'tools'), '--help')
        runs[path] = [sh.returncode, sh.stdout, sh.stderr]
    return runs


def test_every_tool_is_found():
    assert 'tools/train.py' in TOOLS and 'tools/setup_env.sh' in TOOLS and len(TOOLS) > 20


@pytest.mark.parametrize('path', TOOLS)
def test_help(path, help_runs):
    code, out, err = help_runs[path]
    assert code == 0, f'{path} --help: {code}\n{err}'
    assert 'usage' in out.lower(), f'{path} --help prints no usage:\n{out[:500]}'


def test_help_in_its_own_process(run_tool: Callable):
    """The same, as a user runs it (count_params.py used to ignore --help and run)."""
    proc = run_tool('analysis_tools/count_params.py', '--help')
    assert proc.returncode == 0 and proc.stdout.startswith('usage:'), proc.stderr[-2000:]
    assert PKG_RESOURCES_WARNING not in proc.stderr


def test_launchers_without_arguments_print_usage_and_fail(run_tool: Callable):
    for script in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh'):
        proc = run_tool(script)
        assert proc.returncode == 2, script
        assert proc.stderr.startswith('usage:'), (script, proc.stderr)


# ------------------------------------------------------------------ one-line errors, no warnings
def test_missing_dataset_is_one_line_without_warnings(run_tool: Callable, tmp_path):
    proc = run_tool('train.py', COCO_CONFIG, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith('train.py: error: DataCheckError: train_dataloader')
    assert 'data/coco/annotations/instances_train2017.json does not exist' in lines[0]
    assert str(tmp_path) in lines[0] and '--cfg-options' in lines[0] and '--debug' in lines[0]
    assert os.listdir(tmp_path) == []  # no work dir


def test_the_warning_filter_is_what_silences_pkg_resources(tool_env: Dict[str, str], tmp_path):
    """Without mmfish imported, loading an ``mmdet::`` config warns (else the test above could
    not fail): the warning comes from mmengine, and mmfish's filter is what removes it."""
    code = (
        'import sys; from mmengine.config import Config; '
        'Config.fromfile(sys.argv[1], import_custom_modules=False); '
        'assert "mmfish" not in sys.modules'
    )
    env = {**tool_env, 'PYTHONPATH': ''}
    proc = subprocess.run(
        [sys.executable, '-c', code, COCO_CONFIG], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    if PKG_RESOURCES_WARNING not in proc.stderr:
        pytest.skip('this setuptools does not warn about pkg_resources: nothing to filter')
    assert 'mmengine/utils/package_utils.py' in proc.stderr


@pytest.mark.parametrize('how', ['--debug', 'MMFISH_DEBUG=1'])
def test_debug_shows_the_traceback(how, run_tool: Callable, tmp_path):
    args, env = (['--debug'], None) if how == '--debug' else ([], {'MMFISH_DEBUG': '1'})
    proc = run_tool('train.py', COCO_CONFIG, *args, cwd=str(tmp_path), env=env)
    assert proc.returncode == 1
    assert 'Traceback' in proc.stderr and 'DataCheckError' in proc.stderr
    assert PKG_RESOURCES_WARNING not in proc.stderr


def test_train_refuses_a_missing_resume_checkpoint(run_tool: Callable, tmp_path):
    work = tmp_path / 'work'
    proc = run_tool(
        'train.py', TINY_CONFIG, '--work-dir', str(work), '--resume', str(tmp_path / 'no.pth')
    )
    assert proc.returncode == 2
    assert error_lines(proc) == [
        f'train.py: error: --resume {tmp_path / "no.pth"}: no such checkpoint file. Give an '
        'existing one, or --resume without a path to continue from the latest checkpoint of '
        'the work dir (traceback: rerun with --debug or MMFISH_DEBUG=1)'
    ]
    assert not work.exists()


@pytest.mark.parametrize(
    'path, found',
    [
        ('~/epoch_12.pth', True),
        ('~/none.pth', False),
        ('https://x/y.pth', True),
        ('open-mmlab://r50', True),
    ],
    ids=['tilde', 'tilde-missing', 'url', 'scheme'],
)
def test_checkpoint_paths_are_judged_as_mmengine_loads_them(path, found, monkeypatch, tmp_path):
    """``--resume=~/x.pth`` reaches train.py unexpanded by the shell; mmengine expands it."""
    from mmfish.utils.paths import checkpoint_exists

    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path / 'epoch_12.pth').write_bytes(b'')
    assert checkpoint_exists(path) is found


@pytest.mark.parametrize(
    'args, expected',
    [
        (['--out', 'r.json'], '--out must name a .pkl or .pickle file'),
        (['--tta'], '--tta cannot test this model: it predicts masks (model.roi_head.mask_head)'),
    ],
    ids=['out-json', 'tta-mask'],
)
def test_test_refuses_before_writing(
    args, expected, run_tool: Callable, tiny_shapes: str, data_opts: Callable, tmp_path
):
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')  # never read: the arguments fail first
    work = tmp_path / 'work'
    proc = run_tool(
        'test.py', TINY_CONFIG, str(checkpoint), '--work-dir', str(work), *args,
        '--cfg-options', *data_opts(tiny_shapes), cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith('test.py: error: ' + expected), proc.stderr
    assert not work.exists() and not (tmp_path / 'r.json').exists()


def test_test_refuses_a_missing_checkpoint(
    run_tool: Callable, tiny_shapes: str, data_opts: Callable, tmp_path
):
    proc = run_tool(
        'test.py', TINY_CONFIG, str(tmp_path / 'none.pth'), '--cfg-options',
        *data_opts(tiny_shapes), cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2
    assert 'none.pth does not exist' in error_lines(proc)[0]
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # about 20 s: a tiny detector tested with flip TTA
def test_tta_runs_on_a_detector_without_mask_head(
    run_tool: Callable, tiny_shapes: str, data_opts: Callable, tmp_path
):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    no_mask = {'model.roi_head.mask_head': None, 'model.roi_head.mask_roi_extractor': None}
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.merge_from_dict(no_mask)
    register_all_modules()
    model = MODELS.build(cfg.model)
    checkpoint = tmp_path / 'faster.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    proc = run_tool(
        'test.py', TINY_CONFIG, str(checkpoint), '--work-dir', str(tmp_path / 'work'), '--tta',
        '--cfg-options', *data_opts(tiny_shapes), *(f'{k}=None' for k in no_mask),
        'test_evaluator.metric=bbox',
        cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'bbox_mAP_copypaste' in proc.stdout + proc.stderr


# ---------------------------------------------------------------- mmcv's CUDA ops in the set-up
def test_mmcv_check_tells_cuda_code_from_cpu_code(tmp_path):
    check_mmcv_ops = import_tool('misc', 'check_mmcv_ops')
    cpu, cuda = tmp_path / 'cpu.so', tmp_path / 'cuda.so'
    cpu.write_bytes(b'\x7fELF ... .text .data roi_align_forward_impl ...')
    cuda.write_bytes(b'\x7fELF ... .text .nv_fatbin ... __cudaRegisterFatBinary ...')
    assert not check_mmcv_ops.has_cuda_code(str(cpu))
    assert check_mmcv_ops.has_cuda_code(str(cuda))


def test_mmcv_check_on_the_installed_mmcv():
    import importlib.util

    check_mmcv_ops = import_tool('misc', 'check_mmcv_ops')
    assert check_mmcv_ops.problem(cuda=False) is None
    ext = importlib.util.find_spec('mmcv._ext').origin
    if check_mmcv_ops.has_cuda_code(ext):
        assert check_mmcv_ops.problem(cuda=True) is None
    else:  # a CPU build (as on CI) must not pass for a CUDA one
        assert 'built without CUDA ops' in check_mmcv_ops.problem(cuda=True)


def test_cuda_setup_cannot_reuse_a_cached_cpu_build():
    """The FORCE_CUDA=1 path of tools/setup_env.sh: no pip cache, the old mmcv replaced, the
    result checked for CUDA code (the script itself needs a CUDA toolkit and minutes to run)."""
    with open(osp.join(ROOT, 'tools', 'setup_env.sh')) as f:
        script = f.read()
    build = script[script.index('building mmcv with FORCE_CUDA') :]
    build = build[: build.index('step 5')]
    wheel = build[build.index('wheel') : build.index('-w "$MMCV_BUILD_DIR/dist"')]
    assert '--no-cache-dir' in wheel
    assert 'uninstall -y mmcv' in build
    install = build[build.index('"${PIP[@]}" "${INSTALL[@]}" --no-cache-dir') :]
    assert 'dist/mmcv-' in install
    checker = script[script.index('mmcv_ok() {') :]
    checker = checker[: checker.index('\n}\n')]
    assert '[[ "$FORCE_CUDA" == 1 ]] && cuda=(--cuda)' in checker
    assert 'tools/misc/check_mmcv_ops.py' in checker
    assert script.count('mmcv_ok ||') == 1  # checked again after the install


@pytest.mark.parametrize('debug', [False, True])
def test_converter_debug_shows_the_traceback(debug, monkeypatch, capsys, tmp_path):
    converter = import_tool('model_converters', 'fishnet2mmdet')
    missing = str(tmp_path / 'fishnet99_ckpt.tar')
    monkeypatch.setattr(sys, 'argv', ['fishnet2mmdet.py', missing, str(tmp_path / 'out.pth')])
    monkeypatch.setenv('MMFISH_DEBUG', '1' if debug else '0')
    if debug:
        with pytest.raises(FileNotFoundError):
            converter.main()
    else:
        with pytest.raises(SystemExit) as exit_:
            converter.main()
        assert exit_.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith('fishnet2mmdet: error: FileNotFoundError') and missing in err
        assert 'MMFISH_DEBUG=1' in err
    assert not (tmp_path / 'out.pth').exists()
