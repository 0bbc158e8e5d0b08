"""Where a backbone's time goes: torch.profiler's operator times, grouped by kind.

The benchmark (``benchmark_backbone.py``) says how fast a backbone is; this says why. It runs a
few steps of one backbone under ``torch.profiler`` and sums the operators' own (self) CPU time
into kinds: convolution forward and backward, normalisation, activation, element-wise
arithmetic, memory copies and concatenation, pooling and up-sampling, and the rest. A
pre-activation network like FishNet spends its non-convolution time in the norm-ReLU pairs
before every convolution and in the copies that concatenation and format changes make.

Example::

    python tools/analysis_tools/profile_backbone.py --model fishnet150 --mode fwd+bwd
    python tools/analysis_tools/profile_backbone.py --model resnet50 --mode fwd

Times under the profiler are a little longer than without it; compare kinds and models run the
same way, not these totals with the benchmark's.
"""

import argparse
import logging
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import torch

# The benchmark next to this file builds the models and their steps (and registers FishNet).
from benchmark_backbone import KNOWN_MODELS, ModelSpec, backbone_step, build_backbone, parse_shape
from mmdet.utils import register_all_modules
from mmengine.logging import MMLogger
from torch.profiler import ProfilerActivity, profile

# Operator name (after 'aten::') -> kind, for all but the convolutions, which kind_of tells by
# name (mkldnn_convolution, cudnn_convolution, convolution_backward, the CPU's
# _slow_conv2d_forward / _slow_conv2d_backward where oneDNN does not run, the depth-wise
# kernels). Anything else is 'other'.
KINDS: Dict[str, str] = {
    'native_batch_norm': 'normalisation',
    'native_batch_norm_backward': 'normalisation',
    'native_group_norm': 'normalisation',
    'native_group_norm_backward': 'normalisation',
    'cudnn_batch_norm': 'normalisation',
    'cudnn_batch_norm_backward': 'normalisation',
    'clamp_min_': 'activation',
    'clamp_min': 'activation',
    'relu_': 'activation',
    'threshold_backward': 'activation',
    'sigmoid': 'activation',
    'sigmoid_backward': 'activation',
    'add': 'element-wise arithmetic',
    'add_': 'element-wise arithmetic',
    'mul': 'element-wise arithmetic',
    'mul_': 'element-wise arithmetic',
    'sum': 'element-wise arithmetic',
    'div': 'element-wise arithmetic',
    'fill_': 'element-wise arithmetic',
    'copy_': 'copies and concatenation',
    'cat': 'copies and concatenation',
    'max_pool2d_with_indices': 'pooling and up-sampling',
    'max_pool2d_with_indices_backward': 'pooling and up-sampling',
    'upsample_nearest2d': 'pooling and up-sampling',
    'upsample_nearest2d_backward': 'pooling and up-sampling',
    'mean': 'pooling and up-sampling',
}
KIND_ORDER = (
    'convolution forward',
    'convolution backward',
    'normalisation',
    'activation',
    'element-wise arithmetic',
    'copies and concatenation',
    'pooling and up-sampling',
    'other',
)


def kind_of(op: str) -> str:
    """The kind of an aten operator (its name without ``aten::``)."""
    if op in KINDS:
        return KINDS[op]
    if 'conv' in op and 'convert' not in op:  # every convolution kernel (see KINDS)
        return 'convolution backward' if 'backward' in op else 'convolution forward'
    return 'other'


def kind_times(events) -> Dict[str, float]:
    """Self CPU time (microseconds) per kind, over all profiled events."""
    totals: Dict[str, float] = defaultdict(float)
    for event in events:
        name = event.key
        if not name.startswith('aten::'):
            continue
        totals[kind_of(name[len('aten::') :])] += event.self_cpu_time_total
    return totals


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--model',
        default='fishnet150',
        help="fishnet99/150/201 or resnet50/101, with the benchmark's suffixes (+cp, +cls)",
    )
    parser.add_argument('--shape', default='224x224:8', help='HxW:BATCH (default: %(default)s)')
    parser.add_argument('--mode', default='fwd+bwd', choices=['fwd', 'fwd+bwd'])
    parser.add_argument(
        '--memory-format', default='channels_last', choices=['channels_last', 'contiguous']
    )
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--steps', type=int, default=3, help='profiled steps (after 2 warm-up)')
    parser.add_argument('--top', type=int, default=12, help='also list the slowest N operators')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    spec = ModelSpec.parse(args.model)
    if spec.base not in KNOWN_MODELS:
        raise SystemExit(f'--model {args.model!r}: use fishnet99/150/201 or resnet50/101')
    torch.set_num_threads(args.threads)
    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every param
    height, width, batch = parse_shape(args.shape, None)
    x = torch.randn(batch, 3, height, width)
    if args.memory_format == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    model = build_backbone(spec, args.memory_format, reference_root=None)
    step = backbone_step(model, x, args.mode, 'fp32')

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    totals = kind_times(events)
    total = sum(totals.values())
    per_step = {kind: totals.get(kind, 0.0) / args.steps / 1e3 for kind in KIND_ORDER}

    print(
        f'{args.model}, {args.shape}, {args.mode}, {args.memory_format}, {args.threads} threads: '
        f'{total / args.steps / 1e3:.0f} ms per step under the profiler'
    )
    print(f'{"kind":28s} {"ms/step":>9s} {"share":>7s}')
    for kind in KIND_ORDER:
        if per_step[kind]:
            print(
                f'{kind:28s} {per_step[kind]:9.1f} {per_step[kind] * 1e3 * args.steps / total:7.1%}'
            )
    slowest: List = sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]
    print(f'\nslowest {args.top} operators (self time, ms/step, calls/step):')
    for event in slowest:
        print(
            f'  {event.key:45s} {event.self_cpu_time_total / args.steps / 1e3:9.1f} '
            f'{event.count / args.steps:6.0f}'
        )
    return per_step


if __name__ == '__main__':
    main()
