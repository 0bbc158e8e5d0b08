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
# Why the comparisons below run where they do: a randomly initialised FishNet in train mode is
# ill-conditioned at batch 2 (a channel whose batch variance is near 0 is divided by it, and
# amplifies any rounding). On the CPU, fishnet150 at 2x3x224x224 in float32, train mode, the
# NHWC and NCHW input gradients differed by 6e-2 relative and bf16 features from float32 ones by
# 0.44-0.69; in eval mode the same network is within rounding. So the code paths are compared
# in train mode in float64 (rounding negligible: any difference is the code's) and within
# float32 / TF32 / bf16 / fp16 rounding in eval mode, as test_speed_paths.py does on CPU.
# Gradients only in float64: max-pooling routes the gradient to one pixel of each window, and
# where a window's values tie to rounding (zeros after ReLU), NHWC and NCHW kernels may pick
# different pixels; on the CPU at 224x224 in eval mode the input gradients differed by 6.9e-3
# relative while the outputs agreed to 2.4e-6 (at 64x96: 4e-6).
FLOAT64_TOLERANCE = 1e-9
# TF32 keeps 10 mantissa bits: one rounding is within 2**-11 relative; ten of them bound a
# network's accumulated error with margin and still catch a wrong operation (errors of order 1).
TF32_TOLERANCE = 10 * 2.0**-11
# Full fp32, eval mode: only the order of summation differs (test_speed_paths.py: 1e-4).
FP32_TOLERANCE = 1e-4
# bf16 keeps 8 significant bits, fp16 11 (test_speed_paths.py).
LOW_PRECISION_TOLERANCE = 8 * 2.0**-7
DEVICE = 'cuda'  # a CPU rehearsal of the backbone tests sets test_cuda.DEVICE = 'cpu'

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
            torch.ones(1, 1, 4, 4, device=DEVICE),
            torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]], device=DEVICE),
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


def seeded_pair(arch: str, dtype: torch.dtype = torch.float32, **kwargs) -> Tuple[FishNet, FishNet]:
    """The same weights in a contiguous and a channels-last FishNet, on the GPU."""
    torch.manual_seed(0)
    contiguous = FishNet(arch, channels_last=False, **kwargs)
    contiguous.init_weights()
    channels_last = FishNet(arch, channels_last=True, **kwargs)
    channels_last.load_state_dict(contiguous.state_dict())
    return contiguous.to(DEVICE, dtype), channels_last.to(DEVICE, dtype)


def outputs_and_grads(
    model: nn.Module, x: torch.Tensor, train: bool = True
) -> Tuple[Tuple[torch.Tensor, ...], torch.Tensor, Dict[str, torch.Tensor]]:
    """Outputs, the input's gradient and every parameter's, for one loss."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    outs = model(x)
    sum((o.float() ** 2).mean() for o in outs).backward()
    return outs, x.grad, {name: p.grad for name, p in model.named_parameters()}


def assert_same_function(
    expected: tuple, actual: tuple, tolerance: float, grads_too: bool = True
) -> None:
    """Outputs (and input / parameter gradients) of ``outputs_and_grads`` within a relative
    tolerance; the error, named, in the message."""
    outs, xgrad, grads = expected
    outs_a, xgrad_a, grads_a = actual
    for i, (out, out_a) in enumerate(zip(outs, outs_a)):
        assert relative_error(out_a, out) < tolerance, f'output {i}: {relative_error(out_a, out)}'
    if grads_too:
        assert relative_error(xgrad_a, xgrad) < tolerance, relative_error(xgrad_a, xgrad)
        flat = torch.cat([g.flatten() for g in grads.values()])
        flat_a = torch.cat([grads_a[n].flatten() for n in grads])
        assert relative_error(flat_a, flat) < tolerance, relative_error(flat_a, flat)


# ----------------------------------------------------------------------------- the backbone
def test_channels_last_equals_contiguous_on_cuda_in_float64_train_mode():
    """Rounding negligible: any difference between the NHWC and NCHW networks is the code's."""
    contiguous, channels_last = seeded_pair('fishnet150', torch.float64)
    x = torch.randn(2, 3, 224, 224, device=DEVICE, dtype=torch.float64)
    assert_same_function(
        outputs_and_grads(contiguous, x), outputs_and_grads(channels_last, x), FLOAT64_TOLERANCE
    )


@pytest.mark.parametrize('use_tf32, tolerance', [(False, FP32_TOLERANCE), (True, TF32_TOLERANCE)])
def test_channels_last_within_rounding_of_contiguous_on_cuda(use_tf32, tolerance):
    contiguous, channels_last = seeded_pair('fishnet150')
    x = torch.randn(2, 3, 224, 224, device=DEVICE)
    with tf32(use_tf32):
        expected = outputs_and_grads(contiguous, x, train=False)
        actual = outputs_and_grads(channels_last, x, train=False)
    assert_same_function(expected, actual, tolerance, grads_too=False)


def test_outputs_are_nchw_contiguous_on_cuda():
    for channels_last in (True, False):
        model = FishNet('fishnet99', channels_last=channels_last).to(DEVICE)
        model.eval()
        for x in (
            torch.randn(1, 3, 128, 96, device=DEVICE),
            torch.randn(1, 3, 128, 96, device=DEVICE).contiguous(memory_format=torch.channels_last),
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
    plain.to(DEVICE)
    checkpointed.to(DEVICE)
    x = torch.randn(2, 3, 128, 160, device=DEVICE)
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
    x = torch.randn(2, 3, 224, 224, device=DEVICE)
    # the same function in low precision (eval mode: see FLOAT64_TOLERANCE for why not train
    # mode; first, as a training step updates the BN statistics)...
    with tf32(False):
        expected = outputs_and_grads(contiguous, x, train=False)
    with torch.autocast(DEVICE, dtype=dtype):
        actual = outputs_and_grads(channels_last, x, train=False)
    assert_same_function(expected, actual, LOW_PRECISION_TOLERANCE, grads_too=False)
    # ...and a training step computed in it, with finite gradients everywhere
    with torch.autocast(DEVICE, dtype=dtype):
        outs, xgrad, grads = outputs_and_grads(channels_last, x)
    assert all(o.dtype == dtype for o in outs)
    assert torch.isfinite(xgrad).all()
    assert all(torch.isfinite(g).all() for g in grads.values())


# ---------------------------------------------------------------------- Mask R-CNN training
def mask_rcnn(arch: str = 'fishnet99') -> nn.Module:
    cfg = Config.fromfile(osp.join(ROOT, 'configs', f'mask_rcnn_{arch}_fpn_1x_coco.py'))
    # Random weights, so BN must normalise with batch statistics as a from-scratch run does: under
    # the fine-tuning config's norm_eval=True, random FishNet-99 activations reach 800 and the
    # first losses 176 (loss_cls 127; 6.1 and 4.8 with these settings; measured on CPU), which
    # no fp16 loss scale survives.
    cfg.model.backbone.update(init_cfg=None, norm_eval=False, frozen_stages=-1)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(DEVICE)


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
    with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.float16):
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
    """A SyncBN FishNet in DDP over NCCL (one process) trains as the plain-BN network does.

    In float64 and train mode (see FLOAT64_TOLERANCE): the batch statistics are what SyncBN
    computes differently, and in float32 a random network's train mode amplifies rounding."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    plain = FishNet('fishnet99', channels_last=True)
    plain.init_weights()
    synced = FishNet('fishnet99', channels_last=True, norm_cfg=dict(type='SyncBN'))
    synced.load_state_dict(plain.state_dict())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    plain.to(DEVICE, torch.float64)
    synced.to(DEVICE, torch.float64)
    x = torch.randn(2, 3, 128, 128, device=DEVICE, dtype=torch.float64)
    dist.init_process_group(
        'nccl', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0, world_size=1
    )
    try:
        ddp = DistributedDataParallel(synced, device_ids=[torch.cuda.current_device()])
        expected = outputs_and_grads(plain, x)
        outs_s, xgrad_s, grads_s = outputs_and_grads(ddp, x)
        total = torch.ones(1, device=DEVICE)
        dist.all_reduce(total)  # the NCCL collective itself
        assert float(total) == 1.0
    finally:
        dist.destroy_process_group()
    grads_s = {name[len('module.') :]: grad for name, grad in grads_s.items()}
    assert_same_function(expected, (outs_s, xgrad_s, grads_s), FLOAT64_TOLERANCE)
    running = dict(synced.named_buffers())
    for name, buffer in plain.named_buffers():
        torch.testing.assert_close(running[name], buffer, rtol=1e-9, atol=1e-12, msg=name)


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
