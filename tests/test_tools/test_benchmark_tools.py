"""The speed tools: ``benchmark_backbone.py`` (backbone and detector modes, its report) and
``profile_backbone.py`` (time sorted into kinds of operators). They are run, never timed."""

import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmfish.models import FishNet
from mmfish.testing import ROOT, import_tool

BENCHMARK = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_backbone.py')
pytestmark = pytest.mark.usefixtures('one_thread')


# --------------------------------------------------------------------------------- benchmark
def run_benchmark(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, BENCHMARK, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow  # about 30 s: a memory subprocess per case
def test_benchmark_script_end_to_end(tmp_path):
    out_json, out_md = tmp_path / 'bench.json', tmp_path / 'bench.md'
    run_benchmark(
        '--shapes', '64x64',
        '--batch', '1',
        '--repeat', '1',
        '--warmup', '0',
        '--threads', '1',
        '--models', 'fishnet99', 'resnet50',
        '--modes', 'fwd', 'fwd+bwd',
        '--out-json', str(out_json),
        '--out-md', str(out_md),
    )  # fmt: skip
    report = json.loads(out_json.read_text())
    assert report['machine']['threads'] == 1
    rows = {(r['model'], r['mode']): r for r in report['results']}
    assert set(rows) == {
        (m, mode) for m in ('fishnet99', 'resnet50') for mode in ('fwd', 'fwd+bwd')
    }
    for row in rows.values():
        assert row['ms_per_image'] > 0 and len(row['times_s']) == 1
        assert row['gmacs_per_image'] > 0 and row['peak_memory_mib'] is not None
    assert rows[('resnet50', 'fwd')]['ratio_to_resnet50'] == 1.0
    with torch.device('meta'):  # counted only
        fishnet99 = FishNet('fishnet99')
    assert rows[('fishnet99', 'fwd')]['params'] == sum(p.numel() for p in fishnet99.parameters())
    assert report['matmul_peak_gflops']['fp32'] > 0
    assert '| fishnet99 |' in out_md.read_text()


@pytest.mark.slow  # about 40 s: two Mask R-CNN builds and steps
def test_benchmark_script_detector_mode(tmp_path):
    out_json = tmp_path / 'bench.json'
    run_benchmark(
        '--detector',
        '--shapes', '64x96:1',
        '--repeat', '1',
        '--warmup', '0',
        '--threads', '1',
        '--models', 'fishnet99', 'resnet50+fused',
        '--no-memory',
        '--out-json', str(out_json),
    )  # fmt: skip
    rows = {(r['model'], r['mode']): r for r in json.loads(out_json.read_text())['results']}
    # a fused model only infers
    assert set(rows) == {('fishnet99', 'fwd'), ('fishnet99', 'fwd+bwd'), ('resnet50+fused', 'fwd')}
    assert all(r['ms_per_image'] > 0 and r['params'] > 30e6 for r in rows.values())


@pytest.mark.parametrize('model', ['fishnet99', 'resnet50'])
def test_profile_tool_sorts_time_into_kinds(model, capsys):
    per_step = import_tool('analysis_tools', 'profile_backbone').main(
        ['--model', model, '--shape', '64x64:2', '--steps', '1', '--threads', '1', '--top', '3']
    )
    assert per_step['convolution forward'] > 0 and per_step['convolution backward'] > 0
    assert per_step['normalisation'] > 0
    assert 'slowest 3 operators' in capsys.readouterr().out


def test_profile_tool_rejects_an_unknown_model():
    with pytest.raises(SystemExit, match='fishnet99/150/201 or resnet50/101'):
        import_tool('analysis_tools', 'profile_backbone').main(['--model', 'vgg16'])


# ------------------------------------------------------------------------------ tools' details
def test_benchmark_no_memory_says_nothing_about_memory(capsys):
    benchmark = import_tool('analysis_tools', 'benchmark_backbone')
    benchmark.main(
        [
            '--shapes', '32x32', '--batch', '1', '--repeat', '1', '--warmup', '0',
            '--threads', '1', '--models', 'fishnet99', '--modes', 'fwd',
            '--memory-format', 'contiguous', '--no-memory', '--no-flops',
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert '| fishnet99 |' in out
    assert 'Memory:' not in out and 'peak MiB' not in out and 'peak memory' not in err
    assert 'peak RSS' in benchmark.memory_method(torch.device('cpu'), no_memory=False)


def test_profiler_counts_every_cpu_convolution_kernel_as_convolution():
    profile_backbone = import_tool('analysis_tools', 'profile_backbone')
    from torch.profiler import ProfilerActivity, profile

    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    with torch.backends.mkldnn.flags(enabled=False):  # torch's own kernels: _slow_conv2d_*
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            conv(x).sum().backward()
    names = {e.key[len('aten::') :] for e in prof.key_averages() if e.key.startswith('aten::')}
    assert {'_slow_conv2d_forward', '_slow_conv2d_backward'} <= names
    kinds = {name: profile_backbone.kind_of(name) for name in names if 'conv' in name}
    assert 'other' not in kinds.values(), kinds
    assert kinds['_slow_conv2d_forward'] == 'convolution forward'
    assert kinds['_slow_conv2d_backward'] == 'convolution backward'
    assert profile_backbone.kind_of('thnn_conv_depthwise2d_backward') == 'convolution backward'
    assert profile_backbone.kind_of('_to_copy') == 'other'  # not everything is a convolution
