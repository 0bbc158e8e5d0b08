"""FishNeXt: FishNet with grouped residual blocks (``arch='fishnext150'``, ``groups`` and
``group_width`` in custom arch dicts)."""

import pytest
import torch
import torch.nn as nn

from mmfish.models import FishNet
from mmfish.models.backbones.fish_blocks import PreActBottleneck
from mmfish.testing import tiny_arch

# Counted by tools/analysis_tools/count_params.py (docs/backbone.md, "Model table"); the paper says
# "about 26M", like ResNeXt-50.
FISHNEXT150_PARAMS = 26_750_888
FISHNEXT150_BACKBONE_PARAMS = 23_457_280
FEATURE_TABLE = [
    (64, 4), (128, 8), (256, 16), (512, 32), (512, 32),
    (768, 16), (512, 8), (320, 4), (832, 8), (1600, 16), (2112, 32),
]  # fmt: skip
# The tiny FishNet with grouped bottlenecks of small width: fast to build and run.
SMALL_GROUPED = tiny_arch(groups=4, group_width=2)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def block_strides(model: FishNet, size: int = 64) -> dict:
    """Each block's 3x3 convolution: (the stride it works at, its groups, its width)."""
    found = {}
    hooks = [
        block.conv2.register_forward_hook(
            lambda m, args, out, name=name: found.__setitem__(
                name, (size // args[0].shape[-1], m.groups, m.in_channels)
            )
        )
        for name, block in model.named_modules()
        if isinstance(block, PreActBottleneck)
    ]
    model.eval()
    with torch.no_grad():
        model.forward_features(torch.rand(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return found


def test_fishnext150_parameter_count_is_about_26m():
    with torch.device('meta'):  # sizes only: no memory, no initialisation
        classifier = FishNet('fishnext150', out_norm=False, num_classes=1000)
        backbone = FishNet('fishnext150', out_norm=False)
    assert num_params(classifier) == FISHNEXT150_PARAMS
    assert abs(FISHNEXT150_PARAMS / 26e6 - 1) < 0.05
    assert num_params(backbone) == FISHNEXT150_BACKBONE_PARAMS


def test_fishnext150_group_width_is_constant_in_a_stage_and_doubles():
    model = FishNet('fishnext150', out_indices=(10,), out_norm=False)
    found = block_strides(model)
    # every residual block: 48 groups of 2 channels at stride 4, doubling per halving.
    assert len(found) == sum(isinstance(m, PreActBottleneck) for m in model.modules())
    for name, (stride, groups, width) in found.items():
        assert groups == 48, name
        assert width == 48 * 2 * stride // 4, (name, stride, width)
    assert {stride for stride, _, _ in found.values()} == {4, 8, 16, 32}
    # the body's first block still shortens its shortcut by channel-wise reduction
    assert model.body[1].blocks[0].reduction_k == 2 and model.body[1].blocks[0].projection is None


def test_fishnet_variants_keep_plain_bottlenecks():
    model = FishNet('fishnet99', out_indices=(10,))
    assert model.arch['groups'] == 1 and model.arch['group_width'] is None
    for block in model.modules():
        if isinstance(block, PreActBottleneck):
            assert block.conv2.groups == 1
            assert block.conv2.in_channels == block.out_channels // 4


def test_fishnext150_features_and_a_training_step():
    torch.manual_seed(0)
    model = FishNet('fishnext150', out_indices=tuple(range(11)))
    model.init_weights()
    model.train()
    assert list(zip(model.out_channels, model.out_strides)) == FEATURE_TABLE
    outs = model(torch.rand(2, 3, 64, 64))
    for out, (channels, stride) in zip(outs, FEATURE_TABLE):
        assert out.shape == (2, channels, 64 // stride, 64 // stride)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.stem[0].weight.detach().clone()
    loss = sum(out.float().pow(2).mean() for out in outs)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    optimizer.step()
    assert not torch.equal(before, model.stem[0].weight)


@pytest.mark.parametrize('channels_last', [True, False])
def test_custom_arch_with_groups_builds_every_stage(channels_last):
    model = FishNet(
        SMALL_GROUPED, out_indices=tuple(range(11)), num_classes=10, channels_last=channels_last
    )
    found = block_strides(model)
    for name, (stride, groups, width) in found.items():
        assert (groups, width) == (4, 4 * 2 * stride // 4), name
    # tail, bridge, body trunk and transfer, head trunk and transfer all have grouped blocks
    for part in ('tail.0', 'bridge', 'body.0.blocks', 'body.0.transfer', 'head.2.blocks'):
        assert any(name.startswith(part) for name in found), part
    model.train()
    outs = model(torch.rand(2, 3, 32, 64))
    # grouped blocks keep the channels of the plain arch
    plain = FishNet(tiny_arch(), out_indices=tuple(range(11)))
    assert model.out_channels == plain.out_channels
    assert [o.shape[1] for o in outs] == list(plain.out_channels)
    logits = model.classify(torch.rand(2, 3, 32, 32))
    logits.sum().backward()
    assert model.head[2].transfer[0].conv2.weight.grad is not None


def test_custom_arch_groups_without_group_width_keeps_fishnet_widths():
    model = FishNet({**SMALL_GROUPED, 'groups': 4, 'group_width': None}, out_indices=(10,))
    for block in model.modules():
        if isinstance(block, PreActBottleneck):
            assert block.conv2.groups == 4
            assert block.conv2.in_channels == block.out_channels // 4


@pytest.mark.parametrize(
    'change, error, message',
    [
        (dict(groups=0), ValueError, r"arch\['groups'\] must be a positive int"),
        (dict(group_width=-2), ValueError, r"arch\['group_width'\] must be a positive int or None"),
        (dict(groups=2.0), ValueError, r"arch\['groups'\]"),
        (dict(groups=7, group_width=None), ValueError, r'groups \(7\) to divide its width'),
        (dict(cardinality=32), KeyError, 'unknown.*cardinality'),
    ],
)  # fmt: skip
def test_bad_group_settings(change, error, message):
    with pytest.raises(error, match=message):
        FishNet({**SMALL_GROUPED, **change}, out_indices=(10,))
