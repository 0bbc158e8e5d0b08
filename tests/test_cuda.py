"""FishNet on an NVIDIA GPU: the fast paths, mixed-precision detector training, SyncBN, benchmark.

Every test here needs a CUDA device and is skipped, with the reason, without one; the detector
tests also need mmcv built with its CUDA ops (``FORCE_CUDA=1 bash tools/setup_env.sh``, README
"On a GPU machine"). Correctness only: the speed is measured by
``tools/analysis_tools/benchmark_backbone.py`` (``docs/benchmark_gpu.md``).
"""

import json
import os
import os.path as osp
import socket
import subprocess
import sys
from contextlib import contextmanager
from typing import Dict, Iterator, Tuple

import pytest
import torch
import torch.nn as nn
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

from mmfish.models import FishNet

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARK = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_backbone.py')
# TF32 keeps 10 mantissa bits: one rounding is within 2**-11 relative. The NHWC and NCHW
# networks round in different places (other kernels); through a hundred layers the features
# differed by 1.9e-4 relative on an H200. Ten TF32 epsilons bound that with margin and still
# catch a wrong operation (errors of order 1).
TF32_TOLERANCE = 10 * 2.0**-11
# Full fp32: only the order of summation differs, but train-mode BN divides by small batch
# deviations; the CPU test of the same comparison allows as much (tests/test_speed_paths.py).
FP32_TOLERANCE = 1e-3

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason='needs a CUDA GPU (torch sees none)')

register_all_modules()


def mmcv_cuda_ops() -> str:
    """Why mmcv's CUDA ops are unusable, or '' when they work.

    Runs a CUDA RoIAlign rather than asking ``get_compiling_cuda_version()``: that call (a C++
    function returning a string) crashed the process with mmcv 2.1.0 built against torch 2.11
    + CUDA 13 on the H200 (README, "On a GPU machine"), while the ops themselves worked.
    """
    if not CUDA:
        return 'needs a CUDA GPU (torch sees none)'
    try:
        from mmcv.ops import roi_align
    except ImportError as e:
        return f'mmcv.ops does not import ({e})'
    try:
        roi_align(
            torch.ones(1, 1, 4, 4, device='cuda'),
            torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]], device='cuda'),
            (2, 2),
        )
    except (RuntimeError, NotImplementedError) as e:
        return f'mmcv has no CUDA ops ({e}); FORCE_CUDA=1 bash tools/setup_env.sh builds them'
    return ''


_MMCV_CUDA_PROBLEM = mmcv_cuda_ops()
needs_mmcv_cuda = pytest.mark.skipif(bool(_MMCV_CUDA_PROBLEM), reason=_MMCV_CUDA_PROBLEM)


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 on or off for cuDNN convolutions and cuBLAS matrix products, restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic cuDNN / torch kernels and no autotuning, restored after."""
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
    )
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2])


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm())


def seeded_pair(arch: str, **kwargs) -> Tuple[FishNet, FishNet]:
    """The same weights in a contiguous and a channels-last FishNet, on the GPU."""
    torch.manual_seed(0)
    contiguous = FishNet(arch, channels_last=False, **kwargs)
    contiguous.init_weights()
    channels_last = FishNet(arch, channels_last=True, **kwargs)
    channels_last.load_state_dict(contiguous.state_dict())
    return contiguous.cuda(), channels_last.cuda()


def outputs_and_grads(
    model: nn.Module, x: torch.Tensor
) -> Tuple[Tuple[torch.Tensor, ...], torch.Tensor, Dict[str, torch.Tensor]]:
    """Train-mode outputs, the input's gradient and every parameter's, for one loss."""
    model.train()
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    outs = model(x)
    sum((o.float() ** 2).mean() for o in outs).backward()
    return outs, x.grad, {name: p.grad for name, p in model.named_parameters()}


# ----------------------------------------------------------------------------- the backbone
@pytest.mark.parametrize('use_tf32, tolerance', [(False, FP32_TOLERANCE), (True, TF32_TOLERANCE)])
def test_channels_last_equals_contiguous_on_cuda(use_tf32, tolerance):
    contiguous, channels_last = seeded_pair('fishnet150')
    x = torch.randn(2, 3, 224, 224, device='cuda')
    with tf32(use_tf32):
        outs, xgrad, grads = outputs_and_grads(contiguous, x)
        outs_cl, xgrad_cl, grads_cl = outputs_and_grads(channels_last, x)
    for out, out_cl in zip(outs, outs_cl):
        assert relative_error(out_cl, out) < tolerance
    assert relative_error(xgrad_cl, xgrad) < tolerance
    flat = torch.cat([g.flatten() for g in grads.values()])
    flat_cl = torch.cat([grads_cl[n].flatten() for n in grads])
    assert relative_error(flat_cl, flat) < tolerance


def test_outputs_are_nchw_contiguous_on_cuda():
    for channels_last in (True, False):
        model = FishNet('fishnet99', channels_last=channels_last).cuda()
        model.eval()
        for x in (
            torch.randn(1, 3, 128, 96, device='cuda'),
            torch.randn(1, 3, 128, 96, device='cuda').contiguous(memory_format=torch.channels_last),
        ):
            with torch.no_grad():
                outs = model(x)
            assert all(o.is_cuda and o.is_contiguous() for o in outs)


@pytest.mark.parametrize('channels_last', [True, False], ids=['nhwc', 'nchw'])
def test_with_cp_gradients_equal_plain_in_deterministic_fp32(channels_last):
    torch.manual_seed(0)
    plain = FishNet('fishnet99', channels_last=channels_last)
    plain.init_weights()
    checkpointed = FishNet('fishnet99', channels_last=channels_last, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    plain.cuda()
    checkpointed.cuda()
    x = torch.randn(2, 3, 128, 160, device='cuda')
    with tf32(False), deterministic():
        outs, xgrad, grads = outputs_and_grads(plain, x)
        outs_cp, xgrad_cp, grads_cp = outputs_and_grads(checkpointed, x)
    for out, out_cp in zip(outs, outs_cp):
        assert torch.equal(out_cp, out)
    assert torch.equal(xgrad_cp, xgrad)
    for name, grad in grads.items():
        assert torch.equal(grads_cp[name], grad), name


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
def test_autocast_training_step_is_finite_and_close(dtype):
    contiguous, channels_last = seeded_pair('fishnet150')
    x = torch.randn(2, 3, 224, 224, device='cuda')
    with tf32(False):
        reference, _, _ = outputs_and_grads(contiguous, x)
    with torch.autocast('cuda', dtype=dtype):
        outs, xgrad, grads = outputs_and_grads(channels_last, x)
    assert all(o.dtype == dtype for o in outs)  # computed in the low precision...
    assert torch.isfinite(xgrad).all()
    assert all(torch.isfinite(g).all() for g in grads.values())
    # ...and still the same function: bf16 keeps 8 mantissa bits, fp16 11 (tests/test_speed_paths)
    for out, ref in zip(outs, reference):
        assert relative_error(out, ref) < 8 * 2.0**-7


# ---------------------------------------------------------------------- Mask R-CNN training
def mask_rcnn(arch: str = 'fishnet99') -> nn.Module:
    cfg = Config.fromfile(osp.join(ROOT, 'configs', f'mask_rcnn_{arch}_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.cuda()


def detector_batch(height: int = 320, width: int = 416, batch: int = 2) -> dict:
    """Synthetic images and boxes/masks, as the data loader yields them (benchmark's batch)."""
    sys.path.insert(0, osp.dirname(BENCHMARK))
    try:
        from benchmark_backbone import detector_batch as make_batch
    finally:
        sys.path.pop(0)
    data = make_batch(height, width, batch, torch.device('cpu'), seed=0)
    return data


def train_steps(model: nn.Module, optim_wrapper, steps: int = 3) -> Dict[str, float]:
    """``steps`` training iterations as mmengine's loop runs them; the last step's losses."""
    data = detector_batch()
    model.train()
    for _ in range(steps):
        log_vars = model.train_step(data, optim_wrapper)
    return {k: float(v) for k, v in log_vars.items()}


def assert_trains(model: nn.Module, optim_wrapper, steps: int = 3) -> None:
    """Finite losses of every head, and weights of every part updated (not only BN buffers:
    a dynamic loss scale skips the optimizer step of an overflowing fp16 iteration)."""
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses = train_steps(model, optim_wrapper, steps)
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert any(k.startswith(key) for k in losses), f'no {key} in {sorted(losses)}'
    changed = [k for k, v in model.named_parameters() if not torch.equal(v, before[k])]
    for part in ('backbone.', 'neck.', 'rpn_head.', 'roi_head.bbox_head.', 'roi_head.mask_head.'):
        assert any(k.startswith(part) for k in changed), f'no weight of {part} changed'


@needs_mmcv_cuda
def test_mask_rcnn_fishnet_fp16_amp_train_step():
    """``--amp`` on a GPU: mmengine's AmpOptimWrapper, fp16 autocast and dynamic loss scale."""
    from mmengine.optim import AmpOptimWrapper

    model = mask_rcnn()
    wrapper = AmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        loss_scale='dynamic',
        clip_grad=dict(max_norm=35, norm_type=2),
    )
    # The scale starts at 2**16 and halves at each overflow, whose step is skipped: give it
    # a few steps to find a scale that fits fp16.
    assert_trains(model, wrapper, steps=8)


@needs_mmcv_cuda
def test_mask_rcnn_fishnet_bf16_train_step():
    """bf16 on a GPU: backbone and neck under bf16 autocast, the heads (RoIAlign) in fp32."""
    from mmfish.engine.optimizers.amp import PartialAmpOptimWrapper

    model = mask_rcnn()
    seen = []
    model.backbone.stem.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    wrapper = PartialAmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
        dtype='bfloat16',
        clip_grad=dict(max_norm=35, norm_type=2),
    )
    assert_trains(model, wrapper)
    assert seen and all(d == torch.bfloat16 for d in seen)


@needs_mmcv_cuda
def test_mask_rcnn_fishnet_inference_fp16():
    model = mask_rcnn()
    model.eval()
    data = model.data_preprocessor(detector_batch(), False)
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16):
        results = model(**data, mode='predict')
    assert len(results) == 2
    for result in results:
        assert result.pred_instances.bboxes.is_cuda
        assert torch.isfinite(result.pred_instances.bboxes).all()


# --------------------------------------------------------------------------- SyncBN, NCCL
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not CUDA or not torch.distributed.is_nccl_available(), reason='needs CUDA and NCCL'
)
def test_sync_bn_fishnet_under_nccl_in_one_process_group():
    """A SyncBN FishNet in DDP over NCCL (one process) trains as the plain-BN network does."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    plain = FishNet('fishnet99', channels_last=True)
    plain.init_weights()
    synced = FishNet('fishnet99', channels_last=True, norm_cfg=dict(type='SyncBN'))
    synced.load_state_dict(plain.state_dict())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    plain.cuda()
    x = torch.randn(2, 3, 128, 128, device='cuda')
    dist.init_process_group(
        'nccl', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0, world_size=1
    )
    try:
        ddp = DistributedDataParallel(synced.cuda(), device_ids=[torch.cuda.current_device()])
        with tf32(False):
            outs, xgrad, grads = outputs_and_grads(plain, x)
            outs_s, xgrad_s, grads_s = outputs_and_grads(ddp, x)
        total = torch.ones(1, device='cuda')
        dist.all_reduce(total)  # the NCCL collective itself
        assert float(total) == 1.0
    finally:
        dist.destroy_process_group()
    for out, out_s in zip(outs, outs_s):
        assert relative_error(out_s, out) < FP32_TOLERANCE
    assert relative_error(xgrad_s, xgrad) < FP32_TOLERANCE
    for name, grad in grads.items():
        torch.testing.assert_close(grads_s[f'module.{name}'], grad, rtol=1e-3, atol=1e-6)
    running = dict(synced.named_buffers())
    for name, buffer in plain.named_buffers():
        torch.testing.assert_close(running[name], buffer, rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------ benchmark
def run_benchmark(tmp_path, *args: str) -> dict:
    out_json = tmp_path / 'bench.json'
    cmd = [sys.executable, BENCHMARK, '--device', 'cuda', *args, '--out-json', str(out_json)]
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out_json.read_text())


def test_benchmark_gpu_mode(tmp_path):
    report = run_benchmark(
        tmp_path,
        '--shapes', '256x256:4',
        '--repeat', '2',
        '--warmup', '1',
        '--models', 'fishnet99', 'fishnet99+cp', 'resnet50',
        '--precision', 'fp32', 'bf16', 'fp16',
    )  # fmt: skip
    assert report['machine']['device'] == 'cuda' and report['machine']['gpu']
    assert report['machine']['cudnn_allow_tf32'] is True  # the fp32 rows are TF32
    rows = {(r['model'], r['precision'], r['mode']): r for r in report['results']}
    assert len(rows) == 3 * 3 * 2
    for row in rows.values():
        assert row['ms_per_image'] > 0 and len(row['times_s']) == 2
        assert row['peak_memory_mib'] > 0
    for precision in ('fp32', 'bf16', 'fp16'):
        assert report['matmul_peak_gflops'][precision] > 1000  # any GPU does a TFLOP/s
        # checkpointing trades memory for time in training
        cp, plain = (
            rows[('fishnet99+cp', precision, 'fwd+bwd')],
            rows[('fishnet99', precision, 'fwd+bwd')],
        )
        assert cp['peak_memory_mib'] < plain['peak_memory_mib']


@needs_mmcv_cuda
def test_benchmark_gpu_detector_mode(tmp_path):
    report = run_benchmark(
        tmp_path,
        '--detector',
        '--shapes', '256x320:2',
        '--repeat', '1',
        '--warmup', '1',
        '--models', 'fishnet99', 'resnet50',
        '--precision', 'fp32', 'bf16', 'fp16',
    )  # fmt: skip
    rows = {(r['model'], r['precision'], r['mode']) for r in report['results']}
    assert rows == {
        (m, p, mode)
        for m in ('fishnet99', 'resnet50')
        for p in ('fp32', 'bf16', 'fp16')
        for mode in ('fwd', 'fwd+bwd')
    }
    assert all(r['ms_per_image'] > 0 and r['peak_memory_mib'] > 0 for r in report['results'])
