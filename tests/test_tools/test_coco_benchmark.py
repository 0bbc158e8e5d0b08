"""The COCO benchmark: tools/coco_benchmark.py launches, collect_results.py makes the table.

The table is checked on real work dirs: tools/coco_benchmark.py trains and tests two tiny
Mask R-CNN configs on CPU (a tiny FishNet and a tiny ResNet-18, its "baseline"), and every
figure of the table is compared with what the logs say. The launcher's commands for the COCO
configs are checked with --dry-run: the default set (the configs that can start from published
ImageNet weights), the others named with why, and run when asked for, with a warning.
"""

import glob
import json
import os.path as osp
import re
import shlex
import shutil
import socket
import sys
from typing import Callable, Dict, List

import pytest
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.hub import get_config

from mmfish.testing import ROOT, TINY_CONFIG, import_tool

coco_benchmark = import_tool('.', 'coco_benchmark')
collect_results = import_tool('analysis_tools', 'collect_results')

TINY_FISHNET = TINY_CONFIG
TINY_RESNET = osp.join(ROOT, 'tests', 'data', 'tiny_shapes_resnet_config.py')
FISHNET_RUN, RESNET_RUN = 'tiny_shapes_config', 'tiny_shapes_resnet_config'
NAMES = [coco_benchmark.config_name(c) for c in coco_benchmark.BENCHMARK_CONFIGS]

register_all_modules()


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


# ---------------------------------------------------------------------------------- tiny runs
@pytest.fixture(scope='module')
def benchmark_args(tiny_shapes: str, data_opts: Callable[[str], List[str]]) -> List[str]:
    """The launcher's arguments for the two tiny configs: one epoch of 12 iterations each."""
    options = [*data_opts(tiny_shapes), 'train_cfg.max_epochs=1']
    return ['--configs', TINY_FISHNET, TINY_RESNET, '--cfg-options', *options]


@pytest.fixture(scope='module')
def benchmark_root(
    tmp_path_factory: pytest.TempPathFactory,
    benchmark_args: List[str],
    tool_env: Dict[str, str],
) -> str:
    """Both tiny configs trained, tested and collected by the launcher.

    One plain tools/train.py / test.py process each (``--launcher none``; the dist and Slurm
    commands are checked by the dry runs below, tools/dist_*.sh by test_distributed.py). The
    launcher runs in this process, its subprocesses with one thread each (``tool_env``).
    """
    root = str(tmp_path_factory.mktemp('benchmark'))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in tool_env.items():
            patch.setenv(key, value)
        status = coco_benchmark.main(['--launcher', 'none', '--work-root', root, *benchmark_args])
    assert status == 0
    return root


def _load_results(root: str) -> Dict[str, dict]:
    with open(osp.join(root, 'results.json')) as f:
        return {run['name']: run for run in json.load(f)['runs']}


def _only(pattern: str) -> str:
    paths = glob.glob(pattern)
    assert len(paths) == 1, (pattern, paths)
    return paths[0]


def _row(table: str, first_cells: str) -> List[str]:
    """The cells of the Markdown row that starts with ``first_cells``."""
    row = next(line for line in table.splitlines() if line.startswith(f'| {first_cells} |'))
    return [cell.strip() for cell in row.strip('|').split('|')]


def _mean_time_from_log(work_dir: str) -> float:
    """Seconds per iteration from scalars.json, independently of the collector's code."""
    log = _only(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(log) as f:
        entries = [json.loads(line) for line in f]
    train = [e for e in entries if 'loss' in e]
    assert [e['iter'] for e in train] == list(range(1, 13))  # interval 1, one epoch of 12
    times = [e['time'] for e in train[1:]]  # the epoch's first entry left out
    return sum(times) / len(times)


def _ap_cell(value: float) -> str:
    """How the table shows a logged AP: in %, "n/a" for COCO's -1 (no object of that size)."""
    return 'n/a' if value < 0 else format(100 * value, '.1f')


@pytest.mark.slow
def test_table_values_are_the_logged_values(benchmark_root: str) -> None:
    results = _load_results(benchmark_root)
    assert list(results) == [FISHNET_RUN, RESNET_RUN]
    with open(osp.join(benchmark_root, 'results.md')) as f:
        table = f.read()
    keys = [f'{task}_{m}' for task in ('bbox', 'segm') for m in collect_results.METRICS]
    for name, result in results.items():
        work_dir = osp.join(benchmark_root, name)
        # AP: the test run's output (the launcher tests into <work_dir>/test) ...
        output = _only(osp.join(work_dir, 'test', '*', '*.json'))
        assert result['metrics_source'] == f'test: {output}'
        with open(output) as f:
            logged = json.load(f)
        assert result['metrics'] == {k: logged[f'coco/{k}'] for k in keys}
        # ... which is what the test printed in its text log
        with open(_only(osp.join(work_dir, 'test', '*', '*.log'))) as f:
            text = f.read()
        printed = [
            float(v)
            for task in ('bbox', 'segm')
            for v in re.search(rf'{task}_mAP_copypaste: ([-\d. ]+)', text).group(1).split()
        ]
        assert printed == [result['metrics'][k] for k in keys]
        # seconds per iteration from the training log
        assert result['s_per_iter'] == pytest.approx(_mean_time_from_log(work_dir), rel=1e-12)
        assert result['train_iters_logged'] == 12
        # parameters of the detector in the work dir's config dump
        cfg = Config.fromfile(_only(osp.join(work_dir, '*.py')))
        assert result['params'] == sum(p.numel() for p in MODELS.build(cfg.model).parameters())
        assert result['gflops'] > 0
        # the Markdown row shows the same figures
        cells = _row(table, name)
        assert cells[3:15] == [_ap_cell(result['metrics'][k]) for k in keys]
        assert cells[15] == format(result['params'] / 1e6, '.2f')
        assert cells[17] == format(result['s_per_iter'], '.3f')
    assert results[FISHNET_RUN]['backbone'] == 'FishNet (custom arch)'
    assert results[RESNET_RUN]['backbone'] == 'ResNet-18'
    assert results[FISHNET_RUN]['detector'] == results[RESNET_RUN]['detector'] == 'MaskRCNN'
    # different models: the collector did not read one work dir twice
    assert results[FISHNET_RUN]['params'] != results[RESNET_RUN]['params']


@pytest.mark.slow
def test_delta_to_the_baseline(benchmark_root: str) -> None:
    results = _load_results(benchmark_root)
    fishnet, resnet = results[FISHNET_RUN], results[RESNET_RUN]
    assert fishnet['baseline'] == RESNET_RUN and resnet['baseline'] is None
    for key in ('bbox_mAP', 'segm_mAP'):
        expected = round(100 * (fishnet['metrics'][key] - resnet['metrics'][key]), 1)
        assert fishnet['delta_points'][key] == expected
    assert fishnet['paper_delta_points'] == {}  # a custom FishNet has no paper figure
    assert any('not ResNet-50 as in the paper' in note for note in fishnet['notes'])
    with open(osp.join(benchmark_root, 'results.md')) as f:
        cells = _row(f.read(), f'{FISHNET_RUN} | {RESNET_RUN}')
    box, mask = (fishnet['delta_points'][k] for k in ('bbox_mAP', 'segm_mAP'))
    assert cells[2:] == [
        f'{box:+.1f}' if box else '0.0',
        '-',
        f'{mask:+.1f}' if mask else '0.0',
        '-',
    ]


@pytest.mark.slow
def test_rerun_skips_the_finished_runs(
    benchmark_root: str, benchmark_args: List[str], capsys: pytest.CaptureFixture
) -> None:
    out = _dry_run(capsys, ['--work-root', benchmark_root, *benchmark_args])
    assert out.count('training skipped') == 2 and out.count('test skipped') == 2
    assert 'train.py' not in out and 'test.py' not in out
    assert 'collect_results.py' in out


@pytest.mark.slow
def test_missing_test_output_and_missing_baseline_are_noted(
    benchmark_root: str, tmp_path: str
) -> None:
    # a copy of the FishNet run without its test: AP from the last validation in training
    copy = str(tmp_path / FISHNET_RUN)
    shutil.copytree(
        osp.join(benchmark_root, FISHNET_RUN), copy, ignore=shutil.ignore_patterns('test', '*.pth')
    )
    (result,) = collect_results.collect([copy], flops_shape=None)
    val = _only(osp.join(copy, '*', 'vis_data', 'scalars.json'))
    with open(val) as f:
        last_val = [json.loads(line) for line in f if 'coco/bbox_mAP' in line][-1]
    assert result.metrics['bbox_mAP'] == last_val['coco/bbox_mAP']
    assert result.metrics_source.startswith('validation')
    assert any('no test output' in note for note in result.notes)
    assert any('no ResNet Mask R-CNN run' in note for note in result.notes)
    assert result.delta_points == {} and result.gflops is None
    table = collect_results.markdown([result], None, 'cmd')
    assert 'no test output' in table and 'no ResNet Mask R-CNN run' in table


# ------------------------------------------------------------------------ collector, no runs
def test_collector_refuses_what_is_not_a_work_dir(tmp_path, capsys) -> None:
    empty = tmp_path / 'empty'
    empty.mkdir()
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'notes.txt').write_text('hello')
    for path, message in (
        (empty, 'empty directory'),
        (other, 'not an mmengine work dir'),
        (tmp_path / 'missing', 'no such directory'),
    ):
        with pytest.raises(SystemExit, match=message):
            collect_results.main([str(path), '--no-flops'])


def _fake_work_dir(root, name: str, config: str, bbox: List[float], segm: List[float]) -> str:
    """A work dir as training + testing write it, with chosen figures (no model is run).

    Training log: epoch 1 logs times 5, 1, 3 and epoch 2 logs 9, 2, then a validation; the
    test dir holds an older and a newer test output (the newer has ``bbox`` / ``segm``).
    """
    work_dir = root / name
    vis = work_dir / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    entries = [
        dict(lr=0.02, loss=1.0, time=t, data_time=0.1, epoch=e, iter=i, step=i)
        for e, i, t in [(1, 50, 5.0), (1, 100, 1.0), (1, 150, 3.0), (2, 200, 9.0), (2, 250, 2.0)]
    ]
    entries.append({'coco/bbox_mAP': 0.001, 'coco/segm_mAP': 0.001, 'time': 0.5, 'step': 2})
    (vis / 'scalars.json').write_text(''.join(json.dumps(e) + '\n' for e in entries))
    (work_dir / f'{name}.py').write_text(f'_base_ = {osp.join(ROOT, config)!r}\n')
    for stamp, factor in (('20260102_000000', 0.5), ('20260103_000000', 1.0)):
        test = work_dir / 'test' / stamp
        test.mkdir(parents=True)
        metrics = {
            f'coco/{task}_{m}': round(v * factor, 3)
            for task, values in (('bbox', bbox), ('segm', segm))
            for m, v in zip(collect_results.METRICS, values)
        }
        (test / f'{stamp}.json').write_text(json.dumps({**metrics, 'time': 0.3}))
    return str(work_dir)


def test_each_figure_lands_in_its_column(tmp_path) -> None:
    fishnet = _fake_work_dir(
        tmp_path, 'mask_rcnn_fishnet150_fpn_1x_coco', 'configs/mask_rcnn_fishnet150_fpn_1x_coco.py',
        bbox=[0.401, 0.602, 0.433, 0.224, 0.445, 0.526],
        segm=[0.351, 0.572, 0.373, 0.164, 0.385, -1],
    )  # fmt: skip
    resnet = _fake_work_dir(
        tmp_path, 'mask_rcnn_r50_fpn_1x_coco', 'configs/baselines/mask_rcnn_r50_fpn_1x_coco.py',
        bbox=[0.382, 0.588, 0.414, 0.219, 0.409, 0.495],
        segm=[0.347, 0.557, 0.372, 0.158, 0.369, 0.47],
    )  # fmt: skip
    runs = collect_results.collect([fishnet, resnet], flops_shape=None)
    table = collect_results.markdown(runs, None, 'cmd')
    cells = _row(table, 'mask_rcnn_fishnet150_fpn_1x_coco')
    assert cells[1:3] == ['Mask R-CNN', 'FishNet-150']
    assert cells[3:15] == '40.1 60.2 43.3 22.4 44.5 52.6 35.1 57.2 37.3 16.4 38.5 n/a'.split()
    assert cells[17] == '2.000'  # (1 + 3 + 2) / 3: each epoch's first entry left out
    assert _row(table, 'mask_rcnn_r50_fpn_1x_coco')[2] == 'ResNet-50'
    assert _row(table, 'mask_rcnn_fishnet150_fpn_1x_coco | mask_rcnn_r50_fpn_1x_coco')[2:] == [
        '+1.9', '+2.8', '+0.4', '+2.3'
    ]  # fmt: skip
    fishnet_run = runs[0]
    assert fishnet_run.metrics_source.endswith('20260103_000000.json')  # the newest test
    assert fishnet_run.params != runs[1].params and min(fishnet_run.params, runs[1].params) > 40e6
    assert fishnet_run.notes == [] and runs[1].notes == []


def test_a_config_that_does_not_load_is_a_note(tmp_path) -> None:
    work_dir = _fake_work_dir(
        tmp_path, 'broken', 'configs/mask_rcnn_fishnet150_fpn_1x_coco.py', [0.1] * 6, [0.2] * 6
    )
    with open(osp.join(work_dir, 'broken.py'), 'w') as f:
        f.write("_base_ = 'no_such_base.py'\n")
    (result,) = collect_results.collect([work_dir], flops_shape=None)
    assert result.metrics['bbox_mAP'] == 0.1 and result.s_per_iter == 2.0
    assert result.params is None and result.detector is None
    assert len(result.notes) == 1 and 'did not load' in result.notes[0]


def _run(name: str, detector: str, backbone: dict, box: float, mask: float = None):
    label, kind, arch, depth = collect_results.describe_backbone(backbone)
    metrics = {'bbox_mAP': box, **({'segm_mAP': mask} if mask is not None else {})}
    return collect_results.RunResult(
        name=name, work_dir=name, detector=detector, backbone=label, backbone_type=kind,
        arch=arch, depth=depth, metrics=metrics,
    )  # fmt: skip


def test_deltas_pair_by_detector_and_show_the_papers_figures() -> None:
    runs = [
        _run('faster_r50', 'FasterRCNN', dict(type='ResNet', depth=50), 0.374),
        _run('faster_f150', 'FasterRCNN', dict(type='FishNet', arch='fishnet150'), 0.401),
        _run('faster_f99', 'FasterRCNN', dict(type='FishNet', arch='fishnet99'), 0.381),
        _run('mask_r101', 'MaskRCNN', dict(type='mmdet.ResNet', depth=101), 0.399, 0.361),
        _run('mask_r50', 'MaskRCNN', dict(type='mmdet.ResNet', depth=50), 0.382, 0.347),
        _run('mask_f150', 'MaskRCNN', dict(type='FishNet', arch='fishnet150'), 0.410, 0.370),
    ]
    collect_results.fill_deltas(runs)
    faster_r50, faster_f150, faster_f99, _, _, mask_f150 = runs
    assert faster_f150.baseline == 'faster_r50' and mask_f150.baseline == 'mask_r50'
    assert faster_f150.delta_points == {'bbox_mAP': 2.7}
    assert faster_f150.paper_delta_points == {'bbox_mAP': 2.6}
    assert faster_f99.delta_points == {'bbox_mAP': 0.7} and faster_f99.paper_delta_points == {}
    assert mask_f150.delta_points == {'bbox_mAP': 2.8, 'segm_mAP': 2.3}
    assert mask_f150.paper_delta_points == {'bbox_mAP': 2.8, 'segm_mAP': 2.3}
    assert faster_r50.delta_points == {} and faster_f150.notes == []
    table = collect_results.markdown(runs, (800, 1216), 'cmd')
    assert '| faster_f150 | faster_r50 | +2.7 | +2.6 | - | - |' in table
    assert '| faster_f99 | faster_r50 | +0.7 | - | - | - |' in table
    assert '| mask_f150 | mask_r50 | +2.8 | +2.8 | +2.3 | +2.3 |' in table


def test_delta_notes_a_baseline_without_metrics() -> None:
    runs = [
        _run('mask_r50', 'MaskRCNN', dict(type='ResNet', depth=50), 0.382),
        _run('mask_f150', 'MaskRCNN', dict(type='FishNet', arch='fishnet150'), 0.410, 0.370),
    ]
    collect_results.fill_deltas(runs)
    assert runs[1].delta_points == {'bbox_mAP': 2.8, 'segm_mAP': None}
    assert runs[1].notes == ['mask AP delta unknown: mask_r50 has no segm_mAP']


def test_seconds_per_iteration_leaves_out_each_epochs_first_entry() -> None:
    entries = [
        dict(epoch=1, iter=50, step=50, time=9.0),
        dict(epoch=1, iter=100, step=100, time=1.0),
        dict(epoch=1, iter=150, step=150, time=2.0),
        dict(epoch=2, iter=200, step=200, time=5.0),
        dict(epoch=2, iter=250, step=250, time=3.0),
    ]
    assert collect_results.seconds_per_iteration(entries) == pytest.approx(2.0)
    assert collect_results.seconds_per_iteration(entries[:1]) == 9.0
    assert collect_results.seconds_per_iteration([]) is None


def test_a_resumed_run_counts_each_step_once(tmp_path) -> None:
    first, second = tmp_path / 'a.json', tmp_path / 'b.json'
    first.write_text(
        '{"epoch": 1, "iter": 1, "step": 1, "time": 4.0, "loss": 1}\n'
        '{"epoch": 1, "iter": 2, "step": 2, "time": 8.0, "loss": 1}\n'
        '{"coco/bbox_mAP": 0.1, "data_time": 0.1, "time": 0.3, "step": 1}\n'
    )
    second.write_text('{"epoch": 1, "iter": 2, "step": 2, "time": 2.0, "loss": 1}\n')
    entries = collect_results.train_entries([str(first), str(second)])
    assert [(e['step'], e['time']) for e in entries] == [(1, 4.0), (2, 2.0)]


# --------------------------------------------------------------------------- launcher, dry run
def _dry_run(capsys: pytest.CaptureFixture, argv: List[str]) -> str:
    """The launcher's --dry-run output (run in this process)."""
    capsys.readouterr()
    assert coco_benchmark.main(['--dry-run', *argv]) == 0
    return capsys.readouterr().out


def _commands(out: str, script: str) -> List[List[str]]:
    """The printed command lines that run ``tools/<script>``, split as the shell would."""
    return [shlex.split(line) for line in out.splitlines() if f'tools/{script} ' in line]


def test_dry_run_dist_commands_for_the_default_configs(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv('PYTHON', raising=False)
    root = str(tmp_path / 'bench')
    out = _dry_run(capsys, ['--work-root', root, '--gpus', '4'])
    trains, tests = _commands(out, 'dist_train.sh'), _commands(out, 'dist_test.sh')
    assert len(trains) == len(tests) == 6
    for config, train, test in zip(coco_benchmark.DEFAULT_CONFIGS, trains, tests):
        name = coco_benchmark.config_name(config)
        assert train[:3] == [f'PYTHON={sys.executable}', 'bash', 'tools/dist_train.sh']
        assert train[3:] == [config, '4', '--work-dir', osp.join(root, name), '--resume']
        assert test[:3] == [f'PYTHON={sys.executable}', 'bash', 'tools/dist_test.sh']
        checkpoint = osp.join(root, name, 'epoch_12.pth')  # the 1x schedule's last
        assert test[3:] == [config, checkpoint, '4', '--work-dir', osp.join(root, name, 'test')]
    assert sorted(NAMES) == sorted(
        f'{kind}_rcnn_{backbone}_fpn_1x_coco'
        for kind in ('faster', 'mask')
        for backbone in ('r50', 'fishnet99', 'fishnet150', 'fishnet201')
    )
    defaults = [coco_benchmark.config_name(c) for c in coco_benchmark.DEFAULT_CONFIGS]
    assert defaults == [n for n in NAMES if 'fishnet201' not in n]
    (collect,) = _commands(out, 'analysis_tools/collect_results.py')
    assert collect[2:8] == [osp.join(root, n) for n in defaults]
    assert collect[8:] == ['--out-md', f'{root}/results.md', '--out-json', f'{root}/results.json']
    # the configs left out are named, with why, and no warning is given
    (note,) = [line for line in out.splitlines() if 'not in the default set' in line]
    assert 'faster_rcnn_fishnet201_fpn_1x_coco, mask_rcnn_fishnet201_fpn_1x_coco' in note
    assert 'No FishNet-201 ImageNet weights are published' in note and '--configs' in note
    assert 'warning' not in capsys.readouterr().err
    assert not osp.exists(root)  # nothing ran


def test_a_config_left_out_runs_when_named_with_a_warning(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    root = str(tmp_path / 'bench')
    name = 'mask_rcnn_fishnet201_fpn_1x_coco'
    capsys.readouterr()
    assert coco_benchmark.main(['--dry-run', '--work-root', root, '--configs', name]) == 0
    out, err = capsys.readouterr()
    (train,) = _commands(out, 'dist_train.sh')
    assert train[3:6] == [f'configs/{name}.py', '8', '--work-dir']
    assert len(_commands(out, 'dist_test.sh')) == 1
    assert 'not in the default set' not in out
    (warning,) = err.splitlines()
    assert warning.startswith(f'coco_benchmark: warning: {name}: No FishNet-201 ImageNet weights')
    assert 'weights of your own' in warning


def test_help_names_the_configs_left_out_and_why(capsys) -> None:
    with pytest.raises(SystemExit):
        coco_benchmark.parse_args(['--help'])
    text = ' '.join(capsys.readouterr().out.split())  # argparse wraps the option help
    assert (
        'Not in the default set: faster_rcnn_fishnet201_fpn_1x_coco, '
        'mask_rcnn_fishnet201_fpn_1x_coco (No FishNet-201 ImageNet weights are published'
    ) in text
    assert 'default: the 6 that can start: faster_rcnn_r50_fpn_1x_coco,' in text


def test_the_default_configs_start_from_published_weights() -> None:
    """Each FishNet config's variant is the one its name says, and the default set's ImageNet
    files are published ones (the configs left out expect files nobody publishes)."""
    from mmfish.models.backbones.variants import PUBLISHED_WEIGHTS

    published = {w.converted for w in PUBLISHED_WEIGHTS}
    for config in coco_benchmark.BENCHMARK_CONFIGS:
        backbone = Config.fromfile(osp.join(ROOT, config)).model.backbone
        if backbone.type != 'FishNet':
            continue
        assert backbone.arch in coco_benchmark.config_name(config), config
        starts = backbone.init_cfg.checkpoint in published
        assert starts == (config in coco_benchmark.DEFAULT_CONFIGS), config
        assert starts == (coco_benchmark.start_problem(config) is None), config


def test_dry_run_slurm_commands_for_a_subset(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv('PARTITION', 'gpu')
    monkeypatch.setenv('GPUS', '16')
    root = str(tmp_path / 'bench')
    name = 'mask_rcnn_fishnet150_fpn_1x_coco'
    out = _dry_run(
        capsys,
        ['--launcher', 'slurm', '--work-root', root, '--configs', name,
         'mask_rcnn_r50_fpn_1x_coco', '--train-args=--auto-scale-lr', '--cfg-options', 'a=1'],
    )  # fmt: skip
    trains, tests = _commands(out, 'slurm_train.sh'), _commands(out, 'slurm_test.sh')
    assert len(trains) == len(tests) == 2
    (train, baseline_train), (test, _) = trains, tests
    assert train[1:3] == ['GPUS=16', 'bash'] and test[1:3] == ['GPUS=16', 'bash']
    assert train[4:8] == ['gpu', f'coco_{name}', f'configs/{name}.py', osp.join(root, name)]
    assert train[8:] == ['--resume', '--auto-scale-lr', '--cfg-options', 'a=1']
    checkpoint = osp.join(root, name, 'epoch_12.pth')
    assert test[4:8] == ['gpu', f'coco_{name}_test', f'configs/{name}.py', checkpoint]
    assert test[8:] == ['--work-dir', osp.join(root, name, 'test'), '--cfg-options', 'a=1']
    assert baseline_train[6] == 'configs/baselines/mask_rcnn_r50_fpn_1x_coco.py'


@pytest.mark.parametrize(
    'argv, message',
    [
        (['--launcher', 'slurm'], 'needs a partition'),
        (['--configs', 'mask_rcnn_fishnet50_fpn_1x_coco'], 'not a benchmark config'),
        (['--gpus', '0'], 'need at least 1'),
    ],
)
def test_launcher_refuses_bad_arguments(argv, message, capsys, monkeypatch) -> None:
    monkeypatch.delenv('PARTITION', raising=False)
    with pytest.raises(SystemExit):
        coco_benchmark.parse_args(argv)
    assert message in capsys.readouterr().err


def _without_scope(value):
    if isinstance(value, dict):
        return {k: _without_scope(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return type(value)(_without_scope(v) for v in value)
    return value


@pytest.mark.parametrize(
    'ours, mmdets',
    [
        ('faster_rcnn_r50_fpn_1x_coco', 'faster_rcnn/faster-rcnn_r50_fpn_1x_coco'),
        ('mask_rcnn_r50_fpn_1x_coco', 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco'),
    ],
)
def test_baseline_configs_are_mmdets_with_mmfish_imported(ours: str, mmdets: str) -> None:
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'baselines', f'{ours}.py')).to_dict()
    assert cfg.pop('custom_imports') == dict(imports=['mmfish'], allow_failed_imports=False)
    # The FishNet configs' gradient clipping, so that the runs differ in the backbone alone.
    assert cfg['optim_wrapper'].pop('clip_grad') == dict(max_norm=35, norm_type=2)
    # an mmdet:: base marks its dicts with _scope_='mmdet'; otherwise the configs are equal
    assert _without_scope(cfg) == get_config(f'mmdet::{mmdets}.py').to_dict()
    assert cfg['model']['backbone']['type'] == 'ResNet' and cfg['model']['backbone']['depth'] == 50
