"""The fast paths give the network's results: channels-last, bf16 autocast, fused conv-BN.

Correctness only; speed is measured by ``tools/analysis_tools/benchmark_backbone.py``
(README, "Speed"; its tests are in ``tests/test_tools/test_benchmark_tools.py``), never asserted
here. Gradient checkpointing's gradients are tested in ``test_fishnet.py``.
"""

import copy
import os.path as osp
import sys
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from mmfish.models import FishNet
from mmfish.models.backbones.fish_blocks import PreActBottleneck
from mmfish.models.layers.memory_format import CONVERT_CHUNK_BYTES, nhwc_to_nchw_copy, to_nchw
from mmfish.testing import ROOT

BENCHMARK = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_backbone.py')
# bf16 keeps 8 significant bits: one rounding is within 2**-8 relative. Through a hundred
# layers the features' relative error measured 2-3e-2 (fishnet99 / 150, random weights);
# 8 bf16 epsilons bound it with margin while still catching a wrong op (errors of order 1).
BF16_EPS = 2.0**-7
BF16_FEATURE_TOLERANCE = 8 * BF16_EPS

register_all_modules()


pytestmark = pytest.mark.usefixtures('one_thread')  # values, not speed: see the fixture


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm())


def seeded_pair(arch: str, **kwargs) -> Tuple[FishNet, FishNet]:
    """The same weights in a contiguous and a channels-last FishNet."""
    torch.manual_seed(0)
    contiguous = FishNet(arch, channels_last=False, **kwargs)
    contiguous.init_weights()
    channels_last = FishNet(arch, channels_last=True, **kwargs)
    channels_last.load_state_dict(contiguous.state_dict())
    return contiguous, channels_last


def outputs_and_grads(
    model: nn.Module, x: torch.Tensor, train: bool
) -> Tuple[Tuple[torch.Tensor, ...], torch.Tensor, Dict[str, torch.Tensor]]:
    model.train(train)
    x = x.clone().requires_grad_(True)
    outs = model(x)
    sum((o * o).mean() for o in outs).backward()
    return outs, x.grad, {name: p.grad for name, p in model.named_parameters()}


def count_norms(model: nn.Module) -> int:
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


# ------------------------------------------------------------------------------ channels-last
def test_channels_last_is_the_default_and_keeps_weights_nhwc():
    model = FishNet('fishnet99')
    assert model.channels_last
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # loading a (contiguous) state dict copies values into the NHWC parameters
    model.load_state_dict(FishNet('fishnet99', channels_last=False).state_dict())
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('arch', ['fishnet99', 'fishnet150'])
def test_channels_last_same_outputs_and_grads_in_float64(arch, train):
    """In float64 rounding is negligible: any difference would be the code path's."""
    contiguous, channels_last = seeded_pair(arch)
    contiguous.double()
    channels_last.double()
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    outs, xgrad, grads = outputs_and_grads(contiguous, x, train)
    outs_cl, xgrad_cl, grads_cl = outputs_and_grads(channels_last, x, train)
    for out, out_cl in zip(outs, outs_cl):
        assert out_cl.is_contiguous()  # NCHW out, whatever ran inside
        torch.testing.assert_close(out_cl, out, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(xgrad_cl, xgrad, rtol=1e-8, atol=1e-12)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_cl[name], grad, rtol=1e-7, atol=1e-10, msg=name)


def test_channels_last_float32_outputs_within_rounding():
    """In float32 the two formats round differently (other convolution kernels)."""
    contiguous, channels_last = seeded_pair('fishnet150')
    x = torch.randn(2, 3, 64, 96)
    for train, tolerance in ((False, 1e-4), (True, 1e-3)):
        contiguous.train(train)
        channels_last.train(train)
        with torch.no_grad():
            errors = [relative_error(o_cl, o) for o, o_cl in zip(contiguous(x), channels_last(x))]
        # the README's figure (run with -s)
        print(f'channels-last vs contiguous, fp32, train={train}: largest relative error '
              f'{max(errors):.1e}')  # fmt: skip
        assert max(errors) < tolerance


def test_outputs_are_nchw_even_for_an_nhwc_input():
    model = FishNet('fishnet99', channels_last=False)
    model.eval()
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert all(o.is_contiguous() for o in model(x))


@pytest.mark.parametrize(
    'shape',
    [
        (1, 512, 64, 64),  # 8 rows per chunk, 8 chunks
        (2, 320, 67, 45),  # the last chunk is short
        (1, 3, 8, 8),  # one chunk: a plain copy
    ],
)
def test_nhwc_to_nchw_copy_is_an_exact_copy(shape):
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    rows = max(1, CONVERT_CHUNK_BYTES // (shape[0] * shape[1] * shape[3] * 4))
    assert (rows < shape[2]) == (shape[1] > 3), 'the chunked path must be the one tested'
    out = nhwc_to_nchw_copy(x)
    assert out.is_contiguous()
    assert torch.equal(out, x)


def test_nchw_output_conversion_passes_an_nhwc_gradient_back():
    x = torch.randn(1, 512, 64, 64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out = to_nchw(x)
    assert out.is_contiguous() and torch.equal(out, x)
    grad = torch.randn(out.shape)
    out.backward(grad)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x.grad, grad)


def _mask_rcnn(channels_last: bool) -> nn.Module:
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mask_rcnn_fishnet99_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    if not channels_last:
        cfg.model.backbone.channels_last = False
    return MODELS.build(cfg.model)


def _detector_batch() -> dict:
    sys.path.insert(0, osp.dirname(BENCHMARK))
    try:
        from benchmark_backbone import detector_batch
    finally:
        sys.path.pop(0)
    return detector_batch(128, 160, 2, torch.device('cpu'), seed=0)


def test_detector_from_config_runs_channels_last_with_the_same_outputs():
    """A config gets the NHWC backbone, and the detector keeps it; FPN, RPN and the RoI heads
    (mmcv's RoIAlign reads raw NCHW memory) give the contiguous network's outputs."""
    torch.manual_seed(0)
    reference = _mask_rcnn(channels_last=False)
    reference.init_weights()
    detector = _mask_rcnn(channels_last=True)
    detector.load_state_dict(reference.state_dict())
    assert detector.backbone.channels_last
    assert detector.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)

    data = _detector_batch()
    with torch.no_grad():
        outputs = []
        for model in (reference, detector):
            model.eval()
            batch = model.data_preprocessor(data, False)
            features = model.extract_feat(batch['inputs'])  # backbone + FPN
            outputs.append((batch, features, model.rpn_head(features)))
        (batch, features, rpn), (_, features_cl, rpn_cl) = outputs
        for out, out_cl in zip(_flatten((features, rpn)), _flatten((features_cl, rpn_cl))):
            assert relative_error(out_cl, out) < 1e-4
        # The same proposals for both, so that the RoI heads see the same boxes (with random
        # weights, float rounding may let NMS keep one proposal more or less).
        proposals = reference.rpn_head.predict(features, batch['data_samples'])
        rois = reference.roi_head(features, proposals, batch['data_samples'])
        rois_cl = detector.roi_head(features_cl, proposals, batch['data_samples'])
        for out, out_cl in zip(_flatten(rois), _flatten(rois_cl)):
            assert relative_error(out_cl, out) < 1e-4
        predictions = detector(**batch, mode='predict')
    assert all(len(p.pred_instances) > 0 for p in predictions)


def _flatten(outputs) -> List[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for o in outputs for t in _flatten(o)]


# -------------------------------------------------------------------------------------- bf16
@pytest.mark.parametrize('arch', ['fishnet99', 'fishnet150'])
@pytest.mark.parametrize('out_norm', [True, False])
def test_bf16_autocast_features_within_bf16_tolerance(arch, out_norm):
    torch.manual_seed(0)
    model = FishNet(arch, out_norm=out_norm)
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            actual = model(x)
    for out, out_bf16 in zip(expected, actual):
        assert out_bf16.dtype == torch.bfloat16  # it really ran in bf16
        assert out_bf16.is_contiguous()
        assert relative_error(out_bf16, out) < BF16_FEATURE_TOLERANCE


# ------------------------------------------------------------------------------ fuse_conv_bn
@pytest.mark.parametrize('channels_last', [True, False])
def test_fuse_conv_bn_folds_every_conv_norm_pair(channels_last):
    torch.manual_seed(0)
    model = FishNet('fishnet99', num_classes=10, channels_last=channels_last)
    model.init_weights()
    for module in model.modules():  # non-trivial statistics, so that folding is visible
        if isinstance(module, _BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    fused = fuse_conv_bn(copy.deepcopy(model))

    # Folded: norm2 and norm3 of every block (after conv1, conv2), the stem's three norms,
    # the bridge's norm after its squeeze conv and the score head's. Kept: the
    # pre-activation norms, which follow no convolution (norm1, projection and attention
    # norms, out_norms).
    num_blocks = sum(isinstance(m, PreActBottleneck) for m in model.modules())
    assert count_norms(model) - count_norms(fused) == 2 * num_blocks + 3 + 1 + 1
    for name, module in fused.named_modules():
        if isinstance(module, _BatchNorm):
            assert name.endswith(
                ('norm1', 'projection.0', 'squeeze.0', 'attention.0', 'score.conv.0')
            ) or (name.startswith('out_norms.')), name

    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = (*model(x), model.classify(x))
        actual = (*fused(x), fused.classify(x))
    for out, out_fused in zip(expected, actual):
        torch.testing.assert_close(out_fused, out, rtol=1e-4, atol=1e-4 * out.abs().max().item())


# ----------------------------------------------------------------------------------- with_cp
def _saved_resolutions(model: nn.Module, x: torch.Tensor) -> set:
    """Spatial sizes of the tensors autograd keeps for the backward of ``model(x)``."""
    sizes = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 4:
            sizes.add(tuple(t.shape[-2:]))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sizes


@pytest.mark.parametrize('frozen_stages', [-1, 0])
def test_with_cp_keeps_no_stem_activation(frozen_stages):
    """The stem runs at half the input size, where nothing else does: with checkpointing,
    autograd keeps none of its activations (the memory itself is measured by the benchmark)."""
    x = torch.rand(1, 3, 128, 128, requires_grad=True)
    half = (64, 64)
    plain = FishNet('fishnet99', frozen_stages=frozen_stages)
    plain.train()
    assert half in _saved_resolutions(plain, x)
    checkpointed = FishNet('fishnet99', with_cp=True, frozen_stages=frozen_stages)
    checkpointed.train()
    assert half not in _saved_resolutions(checkpointed, x)
