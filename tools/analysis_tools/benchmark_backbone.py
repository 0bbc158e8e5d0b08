"""Benchmark FishNet against mmdet's ResNets: time, peak memory, parameters and FLOPs.

Every case (model x memory format x precision x mode) is built once; after the warm-up, each
repetition times every case once, in turn (round-robin), so that drift in the machine's speed
(other users, clocks) hits all cases alike. Medians (and minima) are reported, with ratios to
ResNet-50 in the same format, precision and mode, and speed-ups over the reference FishNet
(fp32, contiguous: the code as published) when ``--reference-root`` names a checkout of it.

Models: ``fishnet99``, ``fishnet150``, ``fishnet201``, ``resnet50``, ``resnet101`` (mmdet's),
``reference-fishnet150`` (etc., with ``--reference-root``); a suffix ``+cp`` turns on gradient
checkpointing (``with_cp``), ``+cps`` FishNet's whole-stage checkpointing (``with_cp='stage'``),
``+fused`` folds conv-BN pairs with ``mmcv.cnn.fuse_conv_bn``
(inference only), ``+cls`` runs a FishNet as the reference network does: the 1000-class
classifier (``num_classes=1000, out_norm=False``, :meth:`FishNet.classify`), the same
computation as a ``reference-`` row.

Conventions:

- FLOPs are counted by ``mmengine.analysis.FlopAnalyzer`` at batch 1, where one
  multiply-accumulate counts as one FLOP: the "GMACs" columns are those counts. Achieved
  GFLOP/s counts 2 FLOPs per MAC (as the matrix-product peak does): forward
  ``2 * MACs * batch / time``; forward + backward is taken as 3 forwards
  (``6 * MACs * batch / time``).
- The peak is a 2048x2048 matrix product in the case's dtype, timed among the cases of the
  same run (its fastest repetition); "% peak" is a case's median GFLOP/s against it.
- Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one step, above what was
  allocated before it. On CPU, the peak resident set size during one step above the RSS
  before it, in a fresh subprocess per case (after building the model and the input, and one
  warm-up step), so that no other case's peak hides it. On Linux the peak is ``VmHWM``, reset
  through ``/proc/self/clear_refs`` before the step; elsewhere ``resource.getrusage``'s
  ``ru_maxrss`` (see :func:`peak_rss_bytes`). Both include the gradients the step allocates.
- Modes: ``fwd`` is eval mode under ``torch.no_grad()``; ``fwd+bwd`` is train mode, a loss on
  all outputs (sum of means), and its backward. With ``--detector``: Mask R-CNN inference
  (``predict``) and a train step (``loss`` and backward).
- Precisions: ``fp32``, or autocast to ``bf16`` / ``fp16`` around the whole step. On CUDA the
  fp32 rows use TF32 tensor cores for convolutions and matrix products unless ``--no-tf32``
  (the Markdown table then says ``tf32``). With ``--detector``, ``fp16`` autocasts the whole
  detector (mmdet's ``--amp``), while ``bf16`` autocasts the backbone and neck only and runs the
  heads in fp32 (mmfish's ``PartialAmpOptimWrapper``): mmcv 2.1.0's RoIAlign has no bf16
  kernel.
- Timing: each step is synchronised wall time (``torch.cuda.synchronize`` before and after on
  CUDA), so a host-bound step counts its host time. On CUDA the peak is measured with an
  8192x8192 matrix product (2048 on CPU). cuDNN picks its convolution algorithms by its
  heuristics, as in mmdet's training (its configs set ``cudnn_benchmark=False``), unless
  ``--cudnn-benchmark`` lets it time them (at each new shape: a longer warm-up).

Examples::

    # the defaults: fishnet150 and ResNet-50, both shapes, fp32, channels-last, 2 threads,
    # peak memory (its run time and results: docs/benchmark_cpu.md)
    python tools/analysis_tools/benchmark_backbone.py --out-json bench.json --out-md bench.md
    # every variant
    python tools/analysis_tools/benchmark_backbone.py --models fishnet99 fishnet150 \\
        fishnet201 resnet50 resnet101
    # a quick look
    python tools/analysis_tools/benchmark_backbone.py --shapes 224x224 --batch 8 \\
        --models fishnet150 resnet50 --repeat 3 --no-memory
    # Mask R-CNN train step and inference with each backbone
    python tools/analysis_tools/benchmark_backbone.py --detector --shapes 320x320:2
"""

import argparse
import ctypes
import gc
import importlib
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmdet.utils import register_all_modules
from mmengine.analysis import FlopAnalyzer
from mmengine.hub import get_config
from mmengine.logging import MMLogger
from mmengine.structures import InstanceData

import mmfish  # noqa: F401  (registers FishNet in mmdet's registry)
from mmfish.engine.optimizers.amp import partial_autocast

FISHNETS = ('fishnet99', 'fishnet150', 'fishnet201')
RESNETS = {'resnet50': 50, 'resnet101': 101}
REFERENCE_PREFIX = 'reference-'
SUFFIXES = ('+cp', '+cps', '+fused', '+cls')
KNOWN_MODELS = (*FISHNETS, *RESNETS)
# The defaults: one FishNet and its ResNet baseline (docs/benchmark_cpu.md times them); name the
# others to add them.
DEFAULT_MODELS = ('fishnet150', 'resnet50')
DEFAULT_SHAPES = ('224x224:8', '800x1216:1')
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
MATMUL_SIZES = {'cpu': 2048, 'cuda': 8192}
BASELINE = 'resnet50'
REFERENCE_BASELINE = 'reference-fishnet150'
DETECTOR_CONFIG = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'


@dataclass(frozen=True)
class ModelSpec:
    """A model name split up: ``'fishnet150+cp'`` is fishnet150 with checkpointing."""

    base: str
    with_cp: bool = False
    cp_stages: bool = False
    fused: bool = False
    classifier: bool = False

    @classmethod
    def parse(cls, name: str) -> 'ModelSpec':
        base, *suffixes = name.split('+')
        unknown = [s for s in suffixes if f'+{s}' not in SUFFIXES]
        if unknown:
            raise ValueError(f'{name!r}: unknown suffix {unknown}; valid are {SUFFIXES}')
        return cls(
            base,
            with_cp='cp' in suffixes,
            cp_stages='cps' in suffixes,
            fused='fused' in suffixes,
            classifier='cls' in suffixes,
        )

    @property
    def reference_arch(self) -> Optional[str]:
        """``'fishnet150'`` for ``'reference-fishnet150'``; None for mmfish / mmdet models."""
        if self.base.startswith(REFERENCE_PREFIX):
            return self.base[len(REFERENCE_PREFIX) :]
        return None


@dataclass(frozen=True)
class Case:
    """One timed configuration."""

    model: str
    memory_format: str
    precision: str
    mode: str

    @property
    def label(self) -> str:
        return f'{self.model} {self.memory_format} {self.precision} {self.mode}'


@dataclass
class Result:
    """Measurements of one case at one shape."""

    model: str
    memory_format: str
    precision: str
    mode: str
    height: int
    width: int
    batch: int
    times_s: List[float] = field(default_factory=list)
    median_s: Optional[float] = None
    min_s: Optional[float] = None
    ms_per_image: Optional[float] = None
    ms_per_image_min: Optional[float] = None
    params: Optional[int] = None
    gmacs_per_image: Optional[float] = None
    gflops_per_s: Optional[float] = None
    fraction_of_matmul_peak: Optional[float] = None
    peak_memory_mib: Optional[float] = None
    ratio_to_resnet50: Optional[float] = None
    speedup_over_reference: Optional[float] = None
    ratio_to_resnet50_min: Optional[float] = None
    speedup_over_reference_min: Optional[float] = None


# ------------------------------------------------------------------------------------ arguments
def parse_shape(text: str, batch: Optional[int]) -> Tuple[int, int, int]:
    """``'HxW'`` or ``'HxW:B'`` -> (H, W, B); ``batch`` (``--batch``) overrides B."""
    try:
        size, _, b = text.partition(':')
        h, w = (int(v) for v in size.lower().split('x'))
        b = int(b) if b else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f'bad shape {text!r}: use HxW or HxW:BATCH') from None
    return h, w, batch if batch is not None else b


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--models',
        nargs='+',
        default=list(DEFAULT_MODELS),
        help=f'from {list(KNOWN_MODELS)}, with optional suffixes {list(SUFFIXES)} (e.g. '
        f'fishnet150+cp); "{REFERENCE_PREFIX}fishnet150" etc. need --reference-root '
        '(default: %(default)s)',
    )
    parser.add_argument(
        '--shapes',
        nargs='+',
        default=list(DEFAULT_SHAPES),
        help='input sizes HxW[:BATCH], multiples of 32 (default: %(default)s)',
    )
    parser.add_argument('--batch', type=int, help='batch size for every shape (overrides :BATCH)')
    parser.add_argument(
        '--modes', nargs='+', default=['fwd', 'fwd+bwd'], choices=['fwd', 'fwd+bwd']
    )
    parser.add_argument(
        '--memory-format',
        nargs='+',
        default=['channels_last'],
        choices=['channels_last', 'contiguous'],
        help='one row per format (default: %(default)s)',
    )
    parser.add_argument(
        '--precision',
        nargs='+',
        default=['fp32'],
        choices=list(DTYPES),
        help='fp32, or autocast to bf16 / fp16 (on CPU use bf16); one row per precision',
    )
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
    parser.add_argument('--device', default='auto', help='cpu, cuda or auto (cuda if present)')
    parser.add_argument(
        '--cudnn-benchmark',
        action='store_true',
        help='CUDA: let cuDNN time its algorithms for each new shape (torch.backends.cudnn.'
        "benchmark; mmdet's configs leave it off)",
    )
    parser.add_argument(
        '--no-tf32',
        dest='tf32',
        action='store_false',
        help='CUDA: full fp32 in the fp32 rows (default: TF32 tensor cores, as torch does for '
        'convolutions)',
    )
    parser.add_argument('--repeat', type=int, default=3, help='timed repetitions per case')
    parser.add_argument('--warmup', type=int, default=1, help='untimed repetitions per case')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    parser.add_argument('--no-flops', action='store_true', help='skip counting FLOPs')
    parser.add_argument(
        '--reference-root',
        help='checkout of github kevin-ssy/FishNet: adds reference-fishnet150, in the requested '
        'formats / precisions and as published (fp32, contiguous), the "speed-up" baseline',
    )
    parser.add_argument(
        '--detector',
        action='store_true',
        help="Mask R-CNN (mmdet's mask-rcnn_r50_fpn_1x_coco) inference and train step with "
        'each backbone, instead of the backbone alone',
    )
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out-json', help='write all results here')
    parser.add_argument('--out-md', help='write the Markdown table here (it is also printed)')
    parser.add_argument('--memory-probe', help=argparse.SUPPRESS)  # internal: one subprocess case
    args = parser.parse_args(argv)

    args.shapes = [parse_shape(s, args.batch) for s in args.shapes]
    for h, w, b in args.shapes:
        if h % 32 or w % 32 or b < 1:
            parser.error(f'shape {h}x{w} batch {b}: sizes must be multiples of 32, batch >= 1')
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda, but torch sees no GPU')
    if args.repeat < 1 or args.warmup < 0:
        parser.error('--repeat must be >= 1 and --warmup >= 0')
    models = list(dict.fromkeys(args.models))
    if args.reference_root and REFERENCE_BASELINE not in models:
        models.append(REFERENCE_BASELINE)
    for name in models:
        try:
            spec = ModelSpec.parse(name)
        except ValueError as e:
            parser.error(str(e))
        if spec.reference_arch is not None:
            if spec.reference_arch not in FISHNETS:
                parser.error(f'unknown reference model {name!r}')
            if not args.reference_root:
                parser.error(f'{name} needs --reference-root')
            if spec.with_cp or spec.cp_stages or spec.classifier:
                parser.error(
                    f'{name}: the reference has no gradient checkpointing and is a '
                    'classifier already'
                )
        elif spec.base not in KNOWN_MODELS:
            parser.error(f'unknown model {name!r}: valid are {list(KNOWN_MODELS)}')
        if spec.classifier and (args.detector or spec.base not in FISHNETS):
            parser.error(f'{name}: +cls is for a FishNet backbone benchmark')
        if spec.cp_stages and (spec.with_cp or spec.base not in FISHNETS):
            parser.error(f'{name}: +cps (whole-stage checkpointing) is for a FishNet, without +cp')
    if args.detector and any(ModelSpec.parse(m).reference_arch for m in models):
        warnings.warn(
            '--detector: the reference returns logits, not features; it is skipped', stacklevel=2
        )
        models = [m for m in models if not ModelSpec.parse(m).reference_arch]
    args.models = models
    return args


# ------------------------------------------------------------------------------------- models
def import_reference(reference_root: str) -> types.ModuleType:
    """The reference's ``models/net_factory.py``, without its ``models/__init__.py``.

    That ``__init__`` imports torchvision, which the network does not use: a bare package
    pointing at ``models/`` lets ``net_factory`` and its relative imports load without it.
    """
    models_dir = os.path.join(os.path.abspath(reference_root), 'models')
    if not os.path.isfile(os.path.join(models_dir, 'net_factory.py')):
        raise FileNotFoundError(
            f'{models_dir}/net_factory.py not found: is --reference-root right?'
        )
    if '_fishnet_reference' not in sys.modules:
        package = types.ModuleType('_fishnet_reference')
        package.__path__ = [models_dir]
        sys.modules['_fishnet_reference'] = package
    return importlib.import_module('_fishnet_reference.net_factory')


def backbone_cfg(spec: ModelSpec, memory_format: str) -> dict:
    """The mmdet config of a FishNet or ResNet backbone, as a detection config sets it."""
    if spec.base in FISHNETS:
        cfg = dict(
            type='FishNet',
            arch=spec.base,
            with_cp='stage' if spec.cp_stages else spec.with_cp,
            channels_last=memory_format == 'channels_last',
        )
        if spec.classifier:
            cfg.update(num_classes=1000, out_norm=False)
        return cfg
    return dict(type='ResNet', depth=RESNETS[spec.base], with_cp=spec.with_cp)


def build_backbone(spec: ModelSpec, memory_format: str, reference_root: Optional[str]) -> nn.Module:
    """A backbone in ``memory_format`` (FishNet through its option, others by ``.to``)."""
    if spec.reference_arch is not None:
        model = getattr(import_reference(reference_root), spec.reference_arch)()
    else:
        model = MODELS.build(backbone_cfg(spec, memory_format))
        model.init_weights()
        if spec.classifier:
            model = Classifier(model)
    if memory_format == 'channels_last':
        model.to(memory_format=torch.channels_last)
    return model


class Classifier(nn.Module):
    """A FishNet whose forward is :meth:`FishNet.classify`: image-level logits."""

    def __init__(self, fishnet: nn.Module) -> None:
        super().__init__()
        self.fishnet = fishnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fishnet.classify(x)


def build_detector(spec: ModelSpec, memory_format: str) -> nn.Module:
    """Mask R-CNN R-50-FPN 1x with the backbone swapped; neck in_channels read from it."""
    cfg = get_config(DETECTOR_CONFIG)
    cfg.model.backbone = backbone_cfg(spec, memory_format)
    cfg.model.neck.in_channels = list(probe_out_channels(MODELS.build(cfg.model.backbone)))
    # Random weights give random scores: keep every detection up to max_per_img, so that each
    # backbone's inference runs the mask head on the same number of boxes.
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    model = MODELS.build(cfg.model)
    model.init_weights()
    if memory_format == 'channels_last' and spec.base in RESNETS:
        model.backbone.to(memory_format=torch.channels_last)
    return model


def probe_out_channels(backbone: nn.Module) -> Tuple[int, ...]:
    """Channels of a backbone's outputs: ``out_channels`` if it says, else from a tiny run."""
    if hasattr(backbone, 'out_channels'):
        return tuple(backbone.out_channels)
    set_mode(backbone, False)
    with torch.no_grad():
        return tuple(o.shape[1] for o in backbone(torch.zeros(1, 3, 64, 64)))


_MODELS: Dict[Tuple[str, str], nn.Module] = {}


def get_model(
    name: str, memory_format: str, args: argparse.Namespace, device: torch.device
) -> nn.Module:
    """One instance per (model, format), shared by that model's precisions and modes."""
    key = (name, memory_format)
    if key not in _MODELS:
        spec = ModelSpec.parse(name)
        torch.manual_seed(args.seed)
        if args.detector:
            model = build_detector(spec, memory_format)
        else:
            model = build_backbone(spec, memory_format, args.reference_root)
        if spec.fused:
            set_mode(model, False)
            fuse_conv_bn(model)
        _MODELS[key] = model.to(device)
    return _MODELS[key]


def set_mode(model: nn.Module, training: bool) -> None:
    model.train(training)  # mmdet's ResNet.train() returns None: no chaining


def flat_outputs(outputs) -> List[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for o in outputs for t in flat_outputs(o)]


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=DTYPES[precision], enabled=precision != 'fp32')


# -------------------------------------------------------------------------------------- steps
def backbone_step(
    model: nn.Module, x: torch.Tensor, mode: str, precision: str
) -> Callable[[], None]:
    """One forward (eval, no grad) or one forward + backward (train) of a backbone."""

    def forward() -> None:
        set_mode(model, False)
        with torch.no_grad(), autocast(x.device, precision):
            model(x)

    def forward_backward() -> None:
        set_mode(model, True)
        model.zero_grad(set_to_none=True)
        with autocast(x.device, precision):
            loss = sum(out.float().mean() for out in flat_outputs(model(x)))
        loss.backward()

    return forward if mode == 'fwd' else forward_backward


def detector_batch(height: int, width: int, batch: int, device: torch.device, seed: int) -> dict:
    """Synthetic uint8 images with two boxes and their masks each, as a data loader yields."""
    generator = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch):
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=generator)
        inputs.append(image.to(device))
        boxes = torch.tensor(
            [[0.1 * width, 0.1 * height, 0.5 * width, 0.6 * height],
             [0.4 * width, 0.3 * height, 0.9 * width, 0.9 * height]]
        )  # fmt: skip
        masks = np.zeros((2, height, width), dtype=np.uint8)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
            mask[y1:y2, x1:x2] = 1
        sample = DetDataSample(
            metainfo=dict(img_shape=(height, width), ori_shape=(height, width), scale_factor=(1, 1))
        )
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.tensor([0, 1]), masks=BitmapMasks(masks, height, width)
        )
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def detector_autocast(model: nn.Module, precision: str):
    """fp16: the whole detector (mmdet's ``--amp``); bf16: backbone and neck, heads in fp32."""
    if precision == 'bf16':
        return partial_autocast(model, DTYPES[precision])
    return autocast(next(model.parameters()).device, precision)


def detector_step(model: nn.Module, data: dict, mode: str, precision: str) -> Callable[[], None]:
    """Inference (``fwd``: predict, no grad) or a train step (``fwd+bwd``: loss, backward)."""

    def predict() -> None:
        set_mode(model, False)
        with torch.no_grad(), detector_autocast(model, precision):
            model(**model.data_preprocessor(data, False), mode='predict')

    def train_step() -> None:
        set_mode(model, True)
        model.zero_grad(set_to_none=True)
        with detector_autocast(model, precision):
            losses = model(**model.data_preprocessor(data, True), mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()

    return predict if mode == 'fwd' else train_step


def make_step(
    case: Case, shape: Tuple[int, int, int], args: argparse.Namespace, device: torch.device
) -> Callable[[], None]:
    h, w, b = shape
    model = get_model(case.model, case.memory_format, args, device)
    if args.detector:
        data = detector_batch(h, w, b, device, args.seed)
        return detector_step(model, data, case.mode, case.precision)
    x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(args.seed)).to(device)
    if case.memory_format == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    return backbone_step(model, x, case.mode, case.precision)


def matmul_size(device: torch.device) -> int:
    return MATMUL_SIZES.get(device.type, MATMUL_SIZES['cpu'])


def matmul_step(precision: str, device: torch.device) -> Callable[[], None]:
    n = matmul_size(device)
    a = torch.randn(n, n, device=device).to(DTYPES[precision])
    b = torch.randn(n, n, device=device).to(DTYPES[precision])
    return lambda: torch.matmul(a, b)


# --------------------------------------------------------------------------------- measurement
def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_once(step: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def round_robin(
    steps: Dict[object, Callable[[], None]], warmup: int, repeat: int, device: torch.device
) -> Dict[object, List[float]]:
    """Warm every step up, then time each once per repetition, in turn."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: Dict[object, List[float]] = {key: [] for key in steps}
    for r in range(repeat):
        for key, step in steps.items():
            times[key].append(time_once(step, device))
        print(f'  repetition {r + 1}/{repeat} done', file=sys.stderr, flush=True)
    return times


def peak_memory_cuda(step: Callable[[], None], device: torch.device) -> float:
    """Bytes allocated at the peak of one step, above what was allocated before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - before)


def peak_rss_bytes() -> float:
    """The process's peak resident set size, in bytes.

    Linux: ``VmHWM`` of ``/proc/self/status``. Not ``ru_maxrss``, which across fork + exec
    keeps the parent's peak (the kernel carries the old address space's high-water mark into
    the new program), so a subprocess would report at least its parent's size. Elsewhere:
    ``ru_maxrss``.
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == 'darwin' else 1024  # ru_maxrss: bytes on macOS, else KiB
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def release_free_memory() -> None:
    """Hand memory that was freed but kept by glibc's allocator back to the system."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> float:
    """Reset the peak RSS to the current RSS where Linux allows it; return the new baseline.

    Writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0) resets the high-water mark
    (``VmHWM``), so that peaks reached before the step (the warm-up, a temporary copy of the
    weights) do not hide the step's. Elsewhere the baseline is the peak so far.
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        with open('/proc/self/statm') as f:
            return float(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        return peak_rss_bytes()


def memory_probe(args: argparse.Namespace) -> None:
    """The subprocess side of :func:`peak_memory_cpu_subprocess`: prints one JSON line."""
    probe = json.loads(args.memory_probe)
    case, shape = Case(**probe['case']), tuple(probe['shape'])
    device = torch.device('cpu')
    step = make_step(case, shape, args, device)
    step()  # warm-up: libraries, kernels and thread pools take memory on first use
    get_model(case.model, case.memory_format, args, device).zero_grad(set_to_none=True)
    gc.collect()
    release_free_memory()
    before = reset_peak_rss()
    step()
    print(json.dumps(dict(peak_bytes=peak_rss_bytes() - before)))


def peak_memory_cpu_subprocess(
    case: Case, shape: Tuple[int, int, int], args: argparse.Namespace
) -> Optional[float]:
    """Run one step of ``case`` in a fresh interpreter; return its peak RSS increase."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        '--memory-probe',
        json.dumps(dict(case=asdict(case), shape=shape)),
        '--models',
        case.model,
        '--threads',
        str(args.threads),
        '--device',
        'cpu',
        '--seed',
        str(args.seed),
    ]
    if args.reference_root:
        cmd += ['--reference-root', args.reference_root]
    if args.detector:
        cmd.append('--detector')
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f'  memory probe failed for {case.label}:\n{proc.stderr[-2000:]}', file=sys.stderr)
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])['peak_bytes'])


def count_macs(model: nn.Module, height: int, width: int, device: torch.device) -> float:
    """Multiply-accumulates of one forward at batch 1 (mmengine's FlopAnalyzer)."""
    set_mode(model, False)
    analyzer = FlopAnalyzer(model, (torch.zeros(1, 3, height, width, device=device),))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return float(analyzer.total())


# ------------------------------------------------------------------------------------ the run
def cases_for(args: argparse.Namespace) -> List[Case]:
    cases = []
    for model in args.models:
        for memory_format in args.memory_format:
            for precision in args.precision:
                for mode in args.modes:
                    if mode == 'fwd+bwd' and ModelSpec.parse(model).fused:
                        continue  # folded norms cannot train
                    cases.append(Case(model, memory_format, precision, mode))
    if args.reference_root:  # the reference as published: fp32, contiguous
        for mode in args.modes:
            published = Case(REFERENCE_BASELINE, 'contiguous', 'fp32', mode)
            if published not in cases:
                cases.append(published)
    return cases


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    cases = cases_for(args)
    precisions = list(dict.fromkeys(args.precision + ['fp32']))
    results: List[Result] = []
    matmul_peaks: Dict[str, float] = {}
    for shape in args.shapes:
        h, w, b = shape
        print(f'{h}x{w} batch {b}: {len(cases)} cases', file=sys.stderr, flush=True)
        steps: Dict[object, Callable[[], None]] = {
            case: make_step(case, shape, args, device) for case in cases
        }
        for precision in precisions:
            steps[('matmul', precision)] = matmul_step(precision, device)
        times = round_robin(steps, args.warmup, args.repeat, device)
        for precision in precisions:
            n = matmul_size(device)
            peak = 2 * n**3 / min(times[('matmul', precision)]) / 1e9  # best of the run
            matmul_peaks[precision] = max(matmul_peaks.get(precision, 0.0), peak)
        for case in cases:
            result = Result(**asdict(case), height=h, width=w, batch=b, times_s=times[case])
            result.median_s, result.min_s = statistics.median(result.times_s), min(result.times_s)
            result.ms_per_image = 1e3 * result.median_s / b
            result.ms_per_image_min = 1e3 * result.min_s / b
            if device.type == 'cuda' and not args.no_memory:
                result.peak_memory_mib = peak_memory_cuda(steps[case], device) / 2**20
            results.append(result)
        del steps

    fill_static_figures(results, args, device)
    if device.type == 'cpu' and not args.no_memory:
        print('peak memory (one subprocess per case)', file=sys.stderr, flush=True)
        for r in results:
            case = Case(r.model, r.memory_format, r.precision, r.mode)
            peak = peak_memory_cpu_subprocess(case, (r.height, r.width, r.batch), args)
            r.peak_memory_mib = None if peak is None else peak / 2**20
    fill_ratios(results, matmul_peaks)
    return dict(
        machine=machine_info(device, args.threads),
        settings=dict(
            shapes=[list(s) for s in args.shapes],
            models=args.models,
            modes=args.modes,
            memory_formats=args.memory_format,
            precisions=args.precision,
            repeat=args.repeat,
            warmup=args.warmup,
            detector=args.detector,
            matmul_size=matmul_size(device),
            tf32=device.type == 'cuda' and args.tf32,
            cudnn_benchmark=device.type == 'cuda' and args.cudnn_benchmark,
            command=' '.join(['python', os.path.relpath(__file__)] + sys.argv[1:]),
            flops_convention='FlopAnalyzer MACs at batch 1 (one multiply-accumulate = 1 FLOP); '
            'GFLOP/s = 2 x MACs x batch / time, fwd+bwd counted as 3 x fwd',
            memory_method=memory_method(device, args.no_memory),
        ),
        matmul_peak_gflops=matmul_peaks,
        results=[asdict(r) for r in results],
    )


def memory_method(device: torch.device, no_memory: bool) -> Optional[str]:
    """How peak memory was measured on ``device``; None when it was not (``--no-memory``)."""
    if no_memory:
        return None
    if device.type == 'cuda':
        return 'cuda max_memory_allocated above the start of one step'
    return (
        'peak RSS (VmHWM, reset before the step) during one step above the RSS before it, in a '
        'fresh subprocess per case after a warm-up step'
    )


def fill_static_figures(
    results: List[Result], args: argparse.Namespace, device: torch.device
) -> None:
    """Parameters (all models) and forward MACs per image (backbones only)."""
    macs: Dict[Tuple[str, int, int], float] = {}
    for r in results:
        model = get_model(r.model, r.memory_format, args, device)
        r.params = sum(p.numel() for p in model.parameters())
        if args.detector or args.no_flops:
            continue
        key = (ModelSpec.parse(r.model).base, r.height, r.width)
        if key not in macs:
            macs[key] = count_macs(model, r.height, r.width, device)
        r.gmacs_per_image = macs[key] / 1e9


def fill_ratios(results: List[Result], matmul_peaks: Dict[str, float]) -> None:
    index = {
        (r.model, r.memory_format, r.precision, r.mode, r.height, r.width, r.batch): r
        for r in results
    }
    for r in results:
        shape = (r.height, r.width, r.batch)
        base = index.get((BASELINE, r.memory_format, r.precision, r.mode, *shape))
        if base is not None:
            r.ratio_to_resnet50 = r.median_s / base.median_s
            r.ratio_to_resnet50_min = r.min_s / base.min_s
        ref = index.get((REFERENCE_BASELINE, 'contiguous', 'fp32', r.mode, *shape))
        if ref is not None:
            r.speedup_over_reference = ref.median_s / r.median_s
            r.speedup_over_reference_min = ref.min_s / r.min_s
        if r.gmacs_per_image is not None:
            passes = 1 if r.mode == 'fwd' else 3
            r.gflops_per_s = 2 * passes * r.gmacs_per_image * r.batch / r.median_s
            r.fraction_of_matmul_peak = r.gflops_per_s / matmul_peaks[r.precision]


def machine_info(device: torch.device, threads: int) -> dict:
    info = dict(
        cpu=cpu_model_name(),
        logical_cpus=os.cpu_count(),
        threads=threads,
        device=str(device),
        python=platform.python_version(),
        torch=torch.__version__,
    )
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        info['gpu'] = torch.cuda.get_device_name(device)
        info['gpu_memory_gib'] = round(props.total_memory / 2**30, 1)
        info['cuda'] = torch.version.cuda
        info['cudnn'] = torch.backends.cudnn.version()
        info['cudnn_allow_tf32'] = torch.backends.cudnn.allow_tf32
        info['matmul_allow_tf32'] = torch.backends.cuda.matmul.allow_tf32
    return info


def cpu_model_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


# ------------------------------------------------------------------------------------- report
def precision_label(precision: str, settings: dict) -> str:
    """``tf32`` for the fp32 rows of a CUDA run with TF32 on; else the precision."""
    return 'tf32' if precision == 'fp32' and settings.get('tf32') else precision


def markdown(report: dict) -> str:
    """The results as a Markdown table, with the run's settings above it."""
    m, s = report['machine'], report['settings']
    peaks = ', '.join(f'{k} {v:.0f}' for k, v in report['matmul_peak_gflops'].items())
    what = 'Mask R-CNN (fwd: inference, fwd+bwd: train step)' if s['detector'] else 'Backbone'
    size = s.get('matmul_size', MATMUL_SIZES['cpu'])
    gpu = ''
    if 'gpu' in m:
        gpu = f', {m["gpu"]} ({m["gpu_memory_gib"]} GiB, CUDA {m["cuda"]}, cuDNN {m["cudnn"]})'
    lines = [
        f'Machine: {m["cpu"]}{gpu}; device {m["device"]}, {m["threads"]} threads; '
        f'torch {m["torch"]}.',
        f'Command: `{s["command"]}`',
        f'{what}; medians (and minima) of {s["repeat"]} round-robin repetitions after '
        f'{s["warmup"]} warm-up; ratios from medians (and from minima). Matrix-product peak '
        f'({size}x{size}), GFLOP/s: {peaks}.',
        f'FLOPs: {s["flops_convention"]}.'
        + (f' Memory: {s["memory_method"]}.' if s.get('memory_method') else ''),
    ]
    if s.get('tf32'):
        lines.append('tf32: fp32 tensors, TF32 tensor cores for convolutions and matrix products.')
    if m['device'].startswith('cuda'):
        lines.append(
            'cuDNN algorithms: '
            + (
                'timed per shape (cudnn.benchmark).'
                if s.get('cudnn_benchmark')
                else "cuDNN's heuristics (cudnn.benchmark off, as in mmdet's configs)."
            )
        )
    if s['detector'] and 'bf16' in s['precisions']:
        lines.append(
            'Detector bf16: backbone and neck under bf16 autocast, heads in fp32 '
            "(mmcv's RoIAlign has no bf16 kernel); fp16: the whole detector (mmdet's --amp)."
        )
    memory = bool(s.get('memory_method'))  # no memory column after --no-memory
    lines += [
        '',
        '| model | format | prec. | input | mode | ms/step | ms/img | (min) | x R-50 | (min) '
        '| speed-up vs ref. | (min) | GFLOP/s | % peak |'
        + (' peak MiB |' if memory else '')
        + ' params (M) | GMACs/img |',
        '|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|'
        + ('--:|' if memory else '')
        + '--:|--:|',
    ]

    def fmt(value: Optional[float], spec: str, scale: float = 1.0) -> str:
        return '-' if value is None else format(value * scale, spec)

    for r in report['results']:
        lines.append(
            f'| {r["model"]} | {r["memory_format"].replace("channels_last", "NHWC")} '
            f'| {precision_label(r["precision"], s)} | {r["height"]}x{r["width"]} b{r["batch"]} '
            f'| {r["mode"]} | {fmt(r["median_s"], ".1f", 1e3)} '
            f'| {fmt(r["ms_per_image"], ".1f")} | {fmt(r["ms_per_image_min"], ".1f")} '
            f'| {fmt(r["ratio_to_resnet50"], ".2f")} | {fmt(r["ratio_to_resnet50_min"], ".2f")} '
            f'| {fmt(r["speedup_over_reference"], ".2f")} '
            f'| {fmt(r["speedup_over_reference_min"], ".2f")} '
            f'| {fmt(r["gflops_per_s"], ".0f")} | {fmt(r["fraction_of_matmul_peak"], ".0f", 100)} '
            + (f'| {fmt(r["peak_memory_mib"], ".0f")} ' if memory else '')
            + f'| {fmt(r["params"], ".2f", 1e-6)} | {fmt(r["gmacs_per_image"], ".2f")} |'
        )
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    register_all_modules()
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every param
    if args.memory_probe:
        memory_probe(args)
        return {}
    report = run(args)
    table = markdown(report)
    print(table)
    if args.out_json:
        with open(args.out_json, 'w') as f:
            json.dump(report, f, indent=1)
    if args.out_md:
        with open(args.out_md, 'w') as f:
            f.write(table)
    return report


if __name__ == '__main__':
    main()
