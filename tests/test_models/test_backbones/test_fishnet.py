"""FishNet backbone: architecture figures, the mmdet backbone contract, and clear errors."""

import pytest
import torch
import torch.nn as nn
from mmengine.runner import save_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from mmfish.models import FishNet
from mmfish.models.layers.channel_reduction import channel_reduction
from mmfish.testing import tiny_arch

ARCHS = ('fishnet99', 'fishnet150', 'fishnet201')

# From ../shared/FISHNET.md: the reference's parameter counts (with its 1000-class score head)
# and the detection backbone's (no score head), each to the unit.
REFERENCE_PARAMS = {'fishnet99': 16_628_904, 'fishnet150': 24_959_400, 'fishnet201': 44_584_552}
BACKBONE_PARAMS = {'fishnet99': 13_335_296, 'fishnet150': 21_665_792, 'fishnet201': 41_290_944}
# The feature table of FISHNET.md: (channels, stride) of features 0..10, for every variant.
FEATURE_TABLE = [
    (64, 4), (128, 8), (256, 16), (512, 32), (512, 32),
    (768, 16), (512, 8), (320, 4), (832, 8), (1600, 16), (2112, 32),
]  # fmt: skip


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_norm_state(modules, train_state: bool) -> bool:
    return all(m.training == train_state for m in modules if isinstance(m, _BatchNorm))


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_counts_match_reference(arch):
    with torch.device('meta'):  # sizes only: no memory, no initialisation
        classifier = FishNet(arch, out_norm=False, num_classes=1000)
        backbone = FishNet(arch, out_norm=False)
        with_out_norm = FishNet(arch)
    assert num_params(classifier) == REFERENCE_PARAMS[arch]
    assert num_params(backbone) == BACKBONE_PARAMS[arch]
    # out_norm adds one norm (weight and bias) per returned channel, nothing else.
    assert num_params(with_out_norm) == BACKBONE_PARAMS[arch] + 2 * sum(with_out_norm.out_channels)


def test_meta_device_builds_count_what_real_builds_count():
    """The size tests build on the meta device: there a model has the same parameters."""
    for arch in (tiny_arch(), tiny_arch(groups=4, group_width=2)):
        real = FishNet(arch, num_classes=10)
        with torch.device('meta'):
            meta = FishNet(arch, num_classes=10)
        assert all(p.is_meta for p in meta.parameters())
        shapes = {k: v.shape for k, v in real.state_dict().items()}
        assert {k: v.shape for k, v in meta.state_dict().items()} == shapes
        assert num_params(meta) == num_params(real)


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', [(32, 32), (64, 96), (96, 32)])
def test_all_features_have_declared_channels_and_strides(arch, size):
    model = FishNet(arch, out_indices=tuple(range(11)), out_norm=False)
    model.eval()
    assert list(zip(model.out_channels, model.out_strides)) == FEATURE_TABLE
    with torch.no_grad():
        outs = model(torch.rand(1, 3, *size))
    assert isinstance(outs, tuple) and len(outs) == 11
    for out, channels, stride in zip(outs, model.out_channels, model.out_strides):
        assert out.shape == (1, channels, size[0] // stride, size[1] // stride)


@pytest.mark.parametrize('arch', ARCHS)
def test_default_outputs_are_the_detection_pyramid(arch):
    model = FishNet(arch)
    assert model.out_indices == (7, 8, 9, 10)
    assert model.out_channels == (320, 832, 1600, 2112)
    assert model.out_strides == (4, 8, 16, 32)
    model.train()
    outs = model(torch.rand(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (2, 320, 16, 24), (2, 832, 8, 12), (2, 1600, 4, 6), (2, 2112, 2, 3)
    ]  # fmt: skip
    # out_norm ends in ReLU: non-negative, and normalised (not the raw pre-activation sums).
    assert all((o >= 0).all() for o in outs)


def test_stages_after_the_last_requested_feature_are_not_built():
    model = FishNet('fishnet99', out_indices=(1, 3), out_norm=False)
    assert len(model.tail) == 3 and model.bridge is None
    assert len(model.body) == 0 and len(model.head) == 0
    outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]
    # The classifier needs every stage, whatever out_indices says.
    assert len(FishNet('fishnet99', out_indices=(1,), num_classes=10).head) == 3


@pytest.mark.parametrize('arch', ARCHS)
def test_classifier_logits(arch):
    model = FishNet(arch, num_classes=7)
    model.eval()
    with torch.no_grad():
        logits = model.classify(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 7)
    with pytest.raises(RuntimeError, match='num_classes'):
        FishNet('fishnet99').classify(torch.rand(1, 3, 64, 64))


def test_custom_arch_dict():
    arch = tiny_arch()
    assert arch['tail_channels'] == (16, 32, 64) and arch['body_channels'] == (64, 48, 32)
    model = FishNet(arch, out_indices=tuple(range(11)), out_norm=False)
    # stem 16; tail 16, 32, 64; bridge 64; body: 64 + 32 (tail 1), 48 + 16 (tail 0),
    # 32 + 16 (stem); head keeps and adds: 48 + 64, 112 + 96, 208 + 64.
    assert model.out_channels == (16, 16, 32, 64, 64, 96, 64, 48, 112, 208, 272)
    outs = model(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(model.out_channels)


def test_in_channels():
    model = FishNet('fishnet99', in_channels=1)
    outs = model(torch.rand(2, 1, 32, 32))
    assert outs[-1].shape == (2, 2112, 1, 1)


@pytest.mark.parametrize('frozen_stages', [-1, 0, 4, 10])
def test_frozen_stages(frozen_stages):
    model = FishNet('fishnet99', frozen_stages=frozen_stages)
    model.init_weights()
    model.train()
    stages = model.stages()
    for i, stage in enumerate(stages):
        frozen = i <= frozen_stages
        assert check_norm_state(stage.modules(), train_state=not frozen)
        assert all(p.requires_grad != frozen for p in stage.parameters())
    # the out norms are new layers for the neck: never frozen by frozen_stages
    assert all(p.requires_grad for p in model.out_norms.parameters())
    if frozen_stages >= 0:
        model(torch.rand(2, 3, 32, 32))[0].sum().backward()
        assert all(p.grad is None for p in stages[0].parameters())


def test_norm_eval():
    model = FishNet('fishnet99', norm_eval=True)
    model.train()
    assert check_norm_state(model.modules(), train_state=False)
    assert model.training
    before = model.stem[1].running_mean.clone()
    model(torch.rand(2, 3, 32, 32) * 5)
    assert torch.equal(model.stem[1].running_mean, before)
    model = FishNet('fishnet99', norm_eval=False)
    model.train()
    assert check_norm_state(model.modules(), train_state=True)


@pytest.mark.parametrize(
    'norm_cfg, norm_type',
    [
        (dict(type='BN', requires_grad=True), nn.BatchNorm2d),
        (dict(type='GN', num_groups=16, requires_grad=True), nn.GroupNorm),
        (dict(type='SyncBN', requires_grad=True), nn.SyncBatchNorm),
    ],
)
def test_norm_cfg(norm_cfg, norm_type):
    model = FishNet('fishnet99', norm_cfg=norm_cfg)
    norms = [m for m in model.modules() if isinstance(m, (_BatchNorm, nn.GroupNorm))]
    assert norms and all(isinstance(m, norm_type) for m in norms)
    if norm_type is nn.SyncBatchNorm:
        model.eval()  # SyncBN trains only in a process group (tests/test_tools/test_distributed.py)
    outs = model(torch.rand(2, 3, 32, 32))
    assert outs[-1].shape == (2, 2112, 1, 1)


def test_group_norm_that_cannot_split_the_channels_is_named():
    with pytest.raises(ValueError, match='num_groups=16'):
        FishNet('fishnet99', norm_cfg=dict(type='GN', num_groups=32))


@pytest.mark.parametrize('with_cp', [True, 'stage'])
@pytest.mark.parametrize('arch', ['fishnet99', 'fishnet150'])
def test_with_cp_gives_same_outputs_and_gradients(arch, with_cp):
    torch.manual_seed(0)
    model = FishNet(arch, with_cp=False)
    model.init_weights()
    model_cp = FishNet(arch, with_cp=with_cp)
    model_cp.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 64, 32)
    grads = []
    for m in (model, model_cp):
        m.train()
        xi = x.clone().requires_grad_(True)
        outs = m(xi)
        sum((o * o).mean() for o in outs).backward()
        grads.append((outs, xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    (outs, xgrad, pgrads), (outs_cp, xgrad_cp, pgrads_cp) = grads
    for o, o_cp in zip(outs, outs_cp):
        torch.testing.assert_close(o, o_cp, rtol=0, atol=0)
    torch.testing.assert_close(xgrad, xgrad_cp, rtol=1e-6, atol=1e-7)
    for name, grad in pgrads.items():
        torch.testing.assert_close(grad, pgrads_cp[name], rtol=1e-5, atol=1e-7, msg=name)


def test_with_cp_actually_checkpoints():
    model = FishNet('fishnet99', with_cp=True)
    blocks = [m for m in model.modules() if hasattr(m, 'with_cp')]
    assert blocks and all(b.with_cp for b in blocks)


def _saved_tensor_count(model: torch.nn.Module, x: torch.Tensor) -> int:
    """How many tensors autograd keeps for the backward of ``model(x)`` (training mode)."""
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return count


def test_with_cp_stage_checkpoints_whole_stages():
    """'stage': no block checkpoints itself, and autograd keeps only the stage checkpoints'
    inputs (one or two per stage: trunk and transferred feature), far fewer than per block."""
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    kwargs = dict(out_norm=False)  # the output norms keep their own tensors: not counted here
    by_stage = FishNet('fishnet99', with_cp='stage', **kwargs)
    blocks = [m for m in by_stage.modules() if hasattr(m, 'with_cp') and m is not by_stage]
    assert blocks and not any(b.with_cp for b in blocks)
    plain, per_block = FishNet('fishnet99', **kwargs), FishNet('fishnet99', with_cp=True, **kwargs)
    saved = {name: _saved_tensor_count(m, x) for name, m in
             (('plain', plain), ('block', per_block), ('stage', by_stage))}  # fmt: skip
    assert saved['stage'] < saved['block'] < saved['plain'], saved
    assert saved['stage'] <= 2 * len(by_stage.stages()), saved


@pytest.mark.parametrize('with_cp', ['blocks', 1, None])
def test_with_cp_rejects_unknown_values(with_cp):
    with pytest.raises(ValueError, match="'stage'"):
        FishNet('fishnet99', with_cp=with_cp)


def test_reference_initialisation():
    torch.manual_seed(0)
    model = FishNet('fishnet150')
    model.init_weights()
    conv = model.head[2].blocks[0].conv2  # 3x3, 400 output channels: std sqrt(2 / 3600)
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 400)) ** 0.5, rel=0.05)
    assert conv.weight.mean().abs().item() < 1e-3
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_pretrained_init_with_prefix(tmp_path):
    source = FishNet('fishnet99')
    source.init_weights()
    for p in source.parameters():  # make the weights recognisable
        p.data.uniform_(-1, 1)
    detector_state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    detector_state['neck.lateral.weight'] = torch.zeros(3)
    ckpt = tmp_path / 'detector.pth'
    save_checkpoint({'state_dict': detector_state}, str(ckpt))

    model = FishNet(
        'fishnet99',
        init_cfg=dict(type='Pretrained', checkpoint=str(ckpt), prefix='backbone.'),
    )
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_gradient_reaches_the_stem_from_the_head():
    model = FishNet('fishnet99', out_indices=(10,), out_norm=False)
    model.init_weights()
    model.train()
    model(torch.rand(2, 3, 64, 64))[0].sum().backward()
    stem_grad = model.stem[0].weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0
    # every parameter of the network takes part in the head's output
    assert all(p.grad is not None for p in model.parameters())


def test_channel_reduction_sums_adjacent_channels_and_passes_gradient():
    x = torch.arange(2 * 6 * 1 * 1, dtype=torch.float32).reshape(2, 6, 1, 1).requires_grad_(True)
    y = channel_reduction(x, 3)
    assert y.flatten().tolist() == [3.0, 12.0, 21.0, 30.0]
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_registered_in_mmdet_models():
    from mmdet.registry import MODELS

    model = MODELS.build(dict(type='FishNet', arch='fishnet99', out_indices=(8,)))
    assert isinstance(model, FishNet) and model.out_channels == (832,)


# ------------------------------------------------------------------------------- clear errors
def test_unknown_arch_lists_valid_ones():
    with pytest.raises(KeyError, match='fishnet150.*fishnet201.*fishnet99|fishnet99'):
        FishNet('fishnet50')
    with pytest.raises(KeyError, match='missing'):
        FishNet(dict(tail_blocks=(1, 1, 1)))
    with pytest.raises(KeyError, match='unknown'):
        FishNet({**FishNet.arch_settings['fishnet99'], 'depth': 3})
    with pytest.raises(ValueError, match='tail_blocks'):
        FishNet({**FishNet.arch_settings['fishnet99'], 'tail_blocks': (1, 0, 1)})


@pytest.mark.parametrize(
    'out_indices, message',
    [((11,), 'not a feature index'), ((-1,), 'not a feature index'),
     ((7, 7), 'duplicates'), ((), 'empty')],
)  # fmt: skip
def test_bad_out_indices(out_indices, message):
    with pytest.raises(ValueError, match=message):
        FishNet('fishnet99', out_indices=out_indices)


@pytest.mark.parametrize('frozen_stages', [-2, 11])
def test_bad_frozen_stages(frozen_stages):
    with pytest.raises(ValueError, match='frozen_stages'):
        FishNet('fishnet99', frozen_stages=frozen_stages)


@pytest.mark.parametrize('size', [(33, 64), (64, 48), (100, 100)])
def test_input_size_not_multiple_of_32(size):
    model = FishNet('fishnet99')
    with pytest.raises(ValueError, match=rf'{size[0]}x{size[1]}.*pad_size_divisor=32'):
        model(torch.rand(1, 3, *size))


def test_wrong_number_of_input_channels():
    model = FishNet('fishnet99')
    with pytest.raises(ValueError, match='in_channels=3 but the input has 1 channels'):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match='N, C, H, W'):
        model(torch.rand(3, 32, 32))


def test_saved_state_dict_loads_whole_into_a_model_built_with_another_seed(tmp_path):
    """Every parameter and buffer (norm statistics, out norms) is saved and loaded by name."""
    torch.manual_seed(0)
    source = FishNet(tiny_arch())
    source.init_weights()
    source.train()(torch.rand(2, 3, 64, 64))  # moves the norms' running statistics
    path = tmp_path / 'fishnet.pth'
    torch.save(source.state_dict(), path)

    torch.manual_seed(1)
    model = FishNet(tiny_arch())
    model.init_weights()
    saved = torch.load(path)
    assert list(model.state_dict()) == list(saved)  # the same names, in the same order
    assert all(not k.startswith(('fish.', 'module.')) for k in saved)
    assert not torch.equal(model.stem[0].weight, saved['stem.0.weight'])  # another seed
    model.load_state_dict(saved)  # strict: nothing missing, nothing unexpected
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    source.eval(), model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(source(x), model(x)))


def test_missing_pretrained_file_says_how_to_get_it(tmp_path):
    missing = str(tmp_path / 'fishnet150_in1k_mmfish.pth')
    model = FishNet('fishnet99', init_cfg=dict(type='Pretrained', checkpoint=missing))
    with pytest.raises(FileNotFoundError, match='fishnet99_ckpt.tar.*fishnet2mmdet.py.*scratch'):
        model.init_weights()


def test_single_value_per_channel_names_cause_and_fix() -> None:
    tiny = tiny_arch()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)  # one image, 1x1 at stride 32: one value per channel
    with pytest.raises(ValueError) as error:
        FishNet(arch=dict(tiny)).train()(x)
    message = str(error.value)
    for cause_or_fix in ('single value per channel', '1 image(s) of 32x32', 'batch_size >= 2',
                         'at least 64 px', 'norm_eval=True', 'GroupNorm'):  # fmt: skip
        assert cause_or_fix in message, message
    assert 'Expected more than 1 value per channel' in str(error.value.__cause__)
    # The fixes it names work.
    FishNet(arch=dict(tiny)).train()(torch.randn(2, 3, 32, 32))
    FishNet(arch=dict(tiny)).train()(torch.randn(1, 3, 64, 32))
    FishNet(arch=dict(tiny), norm_eval=True).train()(x)
    gn = dict(type='GN', num_groups=4, requires_grad=True)  # the tiny widths: 4 to 272
    FishNet(arch=dict(tiny), norm_cfg=gn).train()(x)
    with torch.device('meta'):  # built to check the channels only
        for arch in ARCHS:  # the message's 16 groups fit them
            FishNet(arch=arch, norm_cfg=dict(gn, num_groups=16))
