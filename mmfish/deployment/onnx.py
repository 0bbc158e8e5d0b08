"""FishNet alone, or with its neck, as an ONNX model: export, check against PyTorch, time.

The exported graph takes one ``(N, 3, H, W)`` float32 image batch named ``input`` whose batch,
height and width are dynamic; height and width must be multiples of :data:`SIZE_DIVISOR` (32),
as for the PyTorch model (the body and head concatenate features of matching sizes). The
outputs are the backbone's features (``feature7`` ... ``feature10`` for ``out_indices=(7, 8, 9,
10)``) or, with the neck, its maps named by their stride (``neck_s4`` ... ``neck_s64`` for an
FPN of five levels).

The model is built from an mmdet or mmseg config: its ``model.backbone`` (and ``model.neck``),
in eval mode, FishNet in the contiguous (NCHW) memory format (ONNX has no memory format; the
channels-last path only reorders memory) and without checkpointing. Its weights come from a
checkpoint (a detector's or segmentor's, or a backbone's converted ImageNet file), or are the
seeded initialisation: the parity check holds for any weights.

Exporters: torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs
onnxscript) by default, the TorchScript exporter on request; docs/deployment.md says which works
on this stack and what each gives. Parity: :func:`check_parity` runs the same seeded inputs
through PyTorch and onnxruntime; an output's error is ``max |onnx - torch| / max |torch|``.
"""

import copy
import logging
import math
import os.path as osp
import statistics
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint

from mmfish.models.backbones.fishnet import SIZE_DIVISOR
from mmfish.utils.errors import UserInputError, listing
from mmfish.utils.io import atomic_path
from mmfish.utils.mim import resolve_config
from mmfish.utils.paths import checkpoint_exists

PARTS = ('backbone', 'backbone+neck')
EXPORTERS = ('dynamo', 'torchscript')
DEFAULT_OPSET = 18
INPUT_NAME = 'input'
#: The largest batch and the largest side (in pixels) the dynamic dimensions allow.
MAX_BATCH = 256
MAX_SIDE = SIZE_DIVISOR * 256
#: The parity the export is held to: ``max |onnx - torch| / max |torch|`` per output, fp32.
DEFAULT_TOLERANCE = 1e-4
DEFAULT_CHECK_SHAPES = ((1, 3, 224, 224), (2, 3, 320, 480))
#: The input the export traces (then made dynamic): batch 2 and sides of 7 x 32, so that no
#: dimension is 1 anywhere (torch.export would specialise a size of 1 to a constant).
TRACE_BATCH, TRACE_SIDE = 2, 224
#: The side of the input that names the neck's outputs by their stride (a power of 2).
NAMING_SIDE = 256

Shape = Tuple[int, int, int, int]


class ExportError(UserInputError):
    """An export that cannot be made as asked; the message names the input and the fix."""


# ---------------------------------------------------------------------------------- input sizes
def parse_shape(text: str, in_channels: int = 3) -> Shape:
    """``'NxCxHxW'`` or ``'HxW'`` (batch 1, ``in_channels``) as ``(N, C, H, W)``, checked.

    Raises:
        ExportError: Not four (or two) positive integers, or a side that is not a multiple of
            :data:`SIZE_DIVISOR` (the message gives the nearest valid sizes).
    """
    try:
        values = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        values = ()
    if len(values) == 2:
        values = (1, in_channels, *values)
    if len(values) != 4 or min(values) < 1:
        raise ExportError(
            f'input shape {text!r}: write NxCxHxW (e.g. 1x{in_channels}x224x224) or HxW, '
            'positive integers'
        )
    check_shape(values)
    return values  # type: ignore[return-value]


def check_shape(shape: Sequence[int]) -> None:
    """Refuse an ``(N, C, H, W)`` whose height or width is not a multiple of 32, with the fix."""
    n, c, h, w = shape
    wrong = [(name, v) for name, v in (('height', h), ('width', w)) if v % SIZE_DIVISOR]
    if not wrong:
        return
    said = ' and '.join(f'{name} {v}' for name, v in wrong)
    said += ' is not a multiple' if len(wrong) == 1 else ' are not multiples'
    fixed = 'x'.join(str(v) for v in (n, c, round_up(h), round_up(w)))
    raise ExportError(
        f'input shape {"x".join(map(str, shape))}: {said} of {SIZE_DIVISOR}; '
        f'FishNet needs both sides divisible by {SIZE_DIVISOR}: pad the image (e.g. to {fixed}, '
        f"as the data preprocessor's pad_size_divisor={SIZE_DIVISOR} does)"
    )


def round_up(side: int) -> int:
    """The smallest multiple of :data:`SIZE_DIVISOR` that is at least ``side``."""
    return -(-side // SIZE_DIVISOR) * SIZE_DIVISOR


def shape_text(shape: Sequence[int]) -> str:
    return 'x'.join(str(v) for v in shape)


# ------------------------------------------------------------------------------------ the model
class BackboneWithNeck(nn.Module):
    """A detector's (or segmentor's) ``backbone`` and optional ``neck``, as one module.

    The attribute names are the detector's, so that its checkpoint loads as it is.
    """

    def __init__(self, backbone: nn.Module, neck: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(x)
        return tuple(self.neck(features) if self.neck is not None else features)


def load_config(config: str) -> Config:
    """The config file (or ``mmfish::`` / ``mmdet::`` name) as an mmengine ``Config``.

    Raises:
        ExportError: No such config, or one without ``model.backbone``.
    """
    path = resolve_config(config)
    if not osp.isfile(path):
        raise ExportError(
            f'config {config} does not exist: give a config file (e.g. '
            'configs/mask_rcnn_fishnet150_fpn_1x_coco.py) or an mmfish:: name'
        )
    cfg = Config.fromfile(path)
    if 'backbone' not in cfg.get('model', {}):
        raise ExportError(
            f'config {config} has no model.backbone: give a detector or segmentor config'
        )
    return cfg


def model_registry(cfg: Config):
    """The ``MODELS`` registry of the config's toolbox (``default_scope``: mmdet or mmseg),
    with that toolbox's modules and mmfish's registered."""
    import mmfish  # noqa: F401  (registers FishNet)

    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmseg':
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    else:
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


def build_model(
    cfg: Config,
    part: str = 'backbone+neck',
    checkpoint: Optional[str] = None,
    seed: int = 0,
    channels_last: bool = False,
) -> BackboneWithNeck:
    """The config's backbone (``part='backbone'``) or backbone and neck (``'backbone+neck'``),
    in eval mode.

    FishNet is built NCHW (``channels_last=False``: what is exported; ``True`` gives the fast
    CPU path PyTorch users run, with the same results) and without checkpointing; ``init_cfg`` is
    dropped (no ImageNet file is read): the weights are ``checkpoint``'s, else the seeded
    initialisation.

    Raises:
        ExportError: ``part`` is not one of :data:`PARTS`, the config has no neck for
            ``'backbone+neck'``, or the checkpoint is missing or does not fit
            (:func:`load_weights`).
    """
    if part not in PARTS:
        raise ExportError(f'part {part!r}: choose one of {", ".join(PARTS)}')
    if part == 'backbone+neck' and not cfg.model.get('neck'):
        raise ExportError(
            f'the config {osp.basename(cfg.filename or "")} has no model.neck: export the '
            'backbone alone (--part backbone)'
        )
    if checkpoint is not None and not checkpoint_exists(checkpoint):
        raise ExportError(
            f"checkpoint {checkpoint} does not exist: give a trained model's checkpoint (e.g. "
            'work_dirs/NAME/epoch_12.pth) or a converted ImageNet file (docs/weights.md), or '
            'leave --checkpoint out to export the seeded initial weights'
        )
    registry = model_registry(cfg)
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.pop('init_cfg', None)
    if backbone_cfg.get('type') in ('FishNet', 'mmfish.FishNet'):
        backbone_cfg.update(channels_last=channels_last, with_cp=False)
    torch.manual_seed(seed)
    backbone = registry.build(backbone_cfg)
    neck = registry.build(copy.deepcopy(cfg.model.neck)) if part == 'backbone+neck' else None
    model = BackboneWithNeck(backbone, neck)
    with quiet_mmengine():
        model.backbone.init_weights()
        if neck is not None and hasattr(neck, 'init_weights'):
            neck.init_weights()
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return model.eval()


@contextmanager
def quiet_mmengine() -> Iterator[None]:
    """mmengine's logger at WARNING for the block (``init_weights`` logs every parameter)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_weights(model: BackboneWithNeck, checkpoint: str) -> None:
    """Load a detector's / segmentor's checkpoint (keys ``backbone.*``, ``neck.*``) or a
    backbone's (keys without prefix, as tools/model_converters/fishnet2mmdet.py writes them).

    Raises:
        ExportError: The file lacks weights of the model, has keys the model does not, or has
            tensors of other shapes (another config or variant).
    """
    loaded = _load_checkpoint(checkpoint, map_location='cpu')
    state = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ExportError(f'checkpoint {checkpoint} holds no state dict: give a model checkpoint')
    parts = [name for name, module in model.named_children() if module is not None]
    if any(k.startswith('backbone.') for k in state):
        wanted = {k: v for k, v in state.items() if k.split('.', 1)[0] in parts}
    else:  # a backbone's own file
        wanted = {f'backbone.{k}': v for k, v in state.items()}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # FishNet's out-norm warning: missing keys say more
        try:
            missing, unexpected = model.load_state_dict(wanted, strict=False)
        except RuntimeError as error:  # size mismatches
            first = str(error).split('\n\t')[1] if '\n\t' in str(error) else str(error)
            raise ExportError(
                f"checkpoint {checkpoint} does not fit the config's model ({first.strip()}): "
                'give the config the checkpoint was trained with'
            ) from None
    if missing:
        neck_only = all(k.startswith('neck.') for k in missing)
        fix = (
            "it holds no neck weights: export --part backbone, or give a trained detector's "
            'checkpoint'
            if neck_only
            else 'give the config the checkpoint was trained with'
        )
        raise ExportError(
            f'checkpoint {checkpoint} lacks {listing(missing, 3, "key")} of the model: {fix}'
        )
    if unexpected:
        raise ExportError(
            f'checkpoint {checkpoint} has {listing(unexpected, 3, "key")} that the config\'s '
            'model does not: give the config the checkpoint was trained with'
        )


def output_names(model: BackboneWithNeck, in_channels: int = 3) -> List[str]:
    """``feature<i>`` for a FishNet's features, ``neck_s<stride>`` for the neck's maps
    (``out<k>`` for another backbone's features)."""
    side = NAMING_SIDE
    with torch.no_grad():
        outputs = model(torch.zeros(1, in_channels, side, side))
    if model.neck is not None:
        return [f'neck_s{2 ** round(math.log2(side / out.shape[-1]))}' for out in outputs]
    indices = getattr(model.backbone, 'out_indices', ())
    if type(model.backbone).__name__ == 'FishNet' and len(indices) == len(outputs):
        return [f'feature{i}' for i in indices]
    return [f'out{k}' for k in range(len(outputs))]


# ------------------------------------------------------------------------------------ export
@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Without the exporter's warnings that concern no op of this model (torchvision's ops not
    registered, TorchScript deprecation notes)."""
    logger = logging.getLogger('torch.onnx')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        logger.setLevel(level)


def export_onnx(
    model: BackboneWithNeck,
    path: str,
    exporter: str = 'dynamo',
    opset: int = DEFAULT_OPSET,
    in_channels: int = 3,
) -> dict:
    """Export ``model`` to the single ONNX file ``path`` (written atomically), dynamic in
    batch, height and width (traced with a ``TRACE_BATCH x in_channels x TRACE_SIDE x
    TRACE_SIDE`` input).

    Returns:
        What was exported: exporter, opset, input and output names, trace shape, seconds.
    """
    sample = torch.randn(TRACE_BATCH, in_channels, TRACE_SIDE, TRACE_SIDE)
    return export_module(
        model, path, sample, output_names(model, in_channels), image_dims(), exporter, opset
    )


def image_dims() -> Dict[int, object]:
    """The dynamic dimensions of an image batch: N, and H and W as multiples of 32."""
    from torch.export import Dim

    return {
        0: Dim('batch', min=1, max=MAX_BATCH),
        2: SIZE_DIVISOR * Dim('height_div32', min=1, max=MAX_SIDE // SIZE_DIVISOR),
        3: SIZE_DIVISOR * Dim('width_div32', min=1, max=MAX_SIDE // SIZE_DIVISOR),
    }


def export_module(
    module: nn.Module,
    path: str,
    sample: torch.Tensor,
    names: Sequence[str],
    dims: Mapping[int, object],
    exporter: str = 'dynamo',
    opset: int = DEFAULT_OPSET,
) -> dict:
    """Export ``module`` (one tensor in, named ``input``; ``names`` out) to the single ONNX file
    ``path``, written atomically, with the input's dimensions ``dims`` dynamic
    (``{axis: torch.export.Dim}``; the TorchScript exporter takes their names only), traced with
    ``sample``. The file is checked with ``onnx.checker``.

    Returns:
        What was exported: exporter, opset, input and output names, trace shape, seconds, MiB.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f'exporter {exporter!r}: choose one of {", ".join(EXPORTERS)}')
    start = time.perf_counter()
    with atomic_path(path) as tmp, quiet_exporter(), torch.no_grad():
        if exporter == 'dynamo':
            program = torch.onnx.export(
                module, (sample,), dynamo=True, input_names=[INPUT_NAME], output_names=names,
                opset_version=opset, dynamic_shapes=(dict(dims),), verbose=False,
            )  # fmt: skip
            program.save(tmp, external_data=False)
        else:
            axes = {axis: str(getattr(dim, '__name__', dim)) for axis, dim in dims.items()}
            out_axes = {n: {axis: f'{n}_{axis}' for axis in dims} for n in names}
            torch.onnx.export(
                module, (sample,), tmp, dynamo=False, input_names=[INPUT_NAME],
                output_names=list(names), opset_version=opset,
                dynamic_axes={INPUT_NAME: axes, **out_axes},
            )  # fmt: skip
        import onnx

        onnx.checker.check_model(tmp)
    return dict(
        exporter=exporter,
        opset=opset,
        trace_shape=list(sample.shape),
        input=INPUT_NAME,
        outputs=list(names),
        export_s=time.perf_counter() - start,
        size_mib=osp.getsize(path) / 2**20,
    )


# ------------------------------------------------------------------------- parity and latency
def session(path: str, threads: int = 0):
    """An onnxruntime CPU session of ``path``; ``threads`` intra-op threads (0: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def relative_errors(onnx_outputs: Sequence[np.ndarray], torch_outputs: Sequence[torch.Tensor]):
    """``max |onnx - torch| / max |torch|`` of each output (in float64)."""
    errors = []
    for got, want in zip(onnx_outputs, torch_outputs, strict=True):
        want64 = want.detach().double().numpy()
        if got.shape != want64.shape:
            raise AssertionError(f'ONNX output of shape {got.shape}, PyTorch {want64.shape}')
        scale = float(np.abs(want64).max()) or 1.0
        errors.append(float(np.abs(got.astype(np.float64) - want64).max()) / scale)
    return errors


@dataclass
class Parity:
    """PyTorch against onnxruntime on one seeded input."""

    shape: List[int]
    errors: Dict[str, float]
    max_error: float = 0.0
    output_shapes: Dict[str, List[int]] = field(default_factory=dict)


def check_parity(
    model: BackboneWithNeck, path: str, shapes: Sequence[Shape], seed: int = 0, threads: int = 0
) -> List[Parity]:
    """Each shape's seeded input through ``model`` and through the ONNX file; the errors."""
    sess = session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    results = []
    for shape in shapes:
        check_shape(shape)
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            want = model(x)
        got = sess.run(None, {INPUT_NAME: x.numpy()})
        errors = dict(zip(names, relative_errors(got, want), strict=True))
        results.append(
            Parity(
                shape=list(shape),
                errors=errors,
                max_error=max(errors.values()),
                output_shapes={n: list(g.shape) for n, g in zip(names, got)},
            )  # fmt: skip
        )
    return results


@dataclass
class Latency:
    """Medians (and minima) of each PyTorch model's forward and onnxruntime's on one input."""

    shape: List[int]
    threads: int
    repeat: int
    ms: Dict[str, float]  # median per engine: the PyTorch models by name, and 'onnxruntime'
    min_ms: Dict[str, float]
    ratio: Dict[str, float]  # onnxruntime / each PyTorch model, from medians
    ratio_min: Dict[str, float]  # the same from minima


ORT = 'onnxruntime'


def measure_latency(
    models: Mapping[str, nn.Module],
    path: str,
    shape: Shape,
    threads: int,
    repeat: int,
    warmup: int = 1,
) -> Latency:
    """Time each PyTorch model's forward (eval, ``no_grad``, fp32) and onnxruntime's on one
    seeded input, in turn (round-robin), ``repeat`` times after ``warmup``; all with ``threads``
    threads, so that a slow spell of a shared machine hits every engine alike."""
    torch.set_num_threads(threads)
    sess = session(path, threads)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    feed = {INPUT_NAME: x.numpy()}

    def forward(model: nn.Module):
        def run() -> None:
            with torch.no_grad():
                model(x)

        return run

    steps = {name: forward(model) for name, model in models.items()}
    steps[ORT] = lambda: sess.run(None, feed)
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for i in range(warmup + repeat):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    low = {k: min(v) * 1e3 for k, v in times.items()}
    return Latency(
        shape=list(shape), threads=threads, repeat=repeat, ms=med, min_ms=low,
        ratio={k: med[ORT] / med[k] for k in models},
        ratio_min={k: low[ORT] / low[k] for k in models},
    )  # fmt: skip


def as_dicts(items: Sequence[object]) -> List[dict]:
    return [asdict(item) for item in items]  # type: ignore[call-overload]


__all__ = [
    'DEFAULT_CHECK_SHAPES',
    'DEFAULT_OPSET',
    'DEFAULT_TOLERANCE',
    'EXPORTERS',
    'PARTS',
    'BackboneWithNeck',
    'ExportError',
    'Latency',
    'ORT',
    'Parity',
    'as_dicts',
    'build_model',
    'check_parity',
    'check_shape',
    'export_module',
    'export_onnx',
    'image_dims',
    'load_config',
    'load_weights',
    'measure_latency',
    'parse_shape',
    'relative_errors',
    'round_up',
    'session',
    'shape_text',
]
