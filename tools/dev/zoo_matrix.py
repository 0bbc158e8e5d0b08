"""The compatibility matrix of docs/zoo.md: FishNet in place of ResNet in every model family that
the installed mmdet and mmseg ship, one training step each on the CPU.

    python tools/dev/zoo_matrix.py                       # print the table
    python tools/dev/zoo_matrix.py --write docs/zoo.md   # and put it in the page
    python tools/dev/zoo_matrix.py --jobs 2 --family retinanet --family fastfcn

A family is a folder of the toolbox's ``.mim/configs``; its config is the first of the folder
(:func:`family_configs`: ResNet-50 names first, then ResNet-18/34/101, shorter names first)
whose backbone is a ResNet; folders without one are left out. For each:

- **FishNet**: :func:`mmfish.zoo.swap.swap_backbone` with FishNet-99 and no ImageNet start, the
  config it writes read back, one training step;
- **ResNet**, where FishNet's step fails: the config as shipped, one training step.

A step: build the model, run its data preprocessor on a batch of random images
(mmdet: one image of 256 px from ``mmdet.testing.demo_mm_inputs``, with boxes, masks and a
semantic map (below 256 classes); mmseg: two of 128 px with label maps, through mmseg's data
preprocessor), the loss, its backward; it works when the loss is finite and the backbone got a
gradient. Both run as one CPU process would: SyncBN as BN, no pretrained weights loaded. The
result of a family:
**works** (FishNet's step works), **fails** (FishNet's does not, ResNet's does: why), **n-a**
(neither does: ResNet's own step cannot run here, why). The table between the markers of
docs/zoo.md is what this writes; ``tests/test_zoo/test_zoo_matrix.py`` checks it.
"""

import argparse
import gc
import glob
import json
import logging
import math
import multiprocessing
import os
import os.path as osp
import re
import sys
import time
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from mmfish.utils.cli import CliError, add_debug_argument, run_cli
from mmfish.utils.io import write_text_atomically
from mmfish.zoo.swap import RESNET_TYPES, backbone_type, config_reference, swap_backbone

TOOLBOXES = ('mmdet', 'mmseg')
ARCH = 'fishnet99'
DET_SIZE = 256
SEG_SIZE = 128
BEGIN = '<!-- zoo-matrix:begin (tools/dev/zoo_matrix.py --write docs/zoo.md) -->'
END = '<!-- zoo-matrix:end -->'
REASON_CHARS = 110


class Row(NamedTuple):
    """One family's result."""

    toolbox: str
    family: str
    config: str
    result: str  # 'works', 'fails', 'n-a'
    why: str
    seconds: float  # both steps; printed, not written into the page

    def cells(self) -> str:
        return f'| {self.toolbox} | {self.family} | `{self.config}` | {self.result} | {self.why} |'


def configs_root(toolbox: str) -> str:
    """The toolbox's installed configs (``<package>/.mim/configs``)."""
    package = __import__(toolbox)
    return osp.join(osp.dirname(package.__file__), '.mim', 'configs')


def _model_of(cfg: Config) -> Optional[dict]:
    model = cfg.get('model')
    if (
        isinstance(model, dict)
        and 'backbone' not in model
        and isinstance(model.get('detector'), dict)
    ):
        model = model['detector']
    return model if isinstance(model, dict) else None


def _preference(path: str) -> Tuple[int, int, str]:
    name = osp.basename(path)
    rank = 0 if 'r50' in name else 1 if re.search(r'r(18|34|101)', name) else 2
    return rank, len(name), name


def family_configs(toolbox: str) -> List[Tuple[str, str]]:
    """``(folder, config path)`` of each family folder that has a ResNet config."""
    root = configs_root(toolbox)
    found = []
    for folder in sorted(os.listdir(root)):
        if folder.startswith('_') or not osp.isdir(osp.join(root, folder)):
            continue
        for path in sorted(glob.glob(osp.join(root, folder, '*.py')), key=_preference):
            try:
                model = _model_of(Config.fromfile(path))
            except Exception:  # a config that does not even read is not a candidate
                continue
            backbone = model.get('backbone') if model else None
            if isinstance(backbone, dict) and backbone_type(backbone) in RESNET_TYPES:
                found.append((folder, path))
                break
    return found


# --------------------------------------------------------------------------------- one step
def _as_one_process(value):
    """SyncBN as BN, recursively (one CPU process has no process group)."""
    if isinstance(value, dict):
        out = {k: _as_one_process(v) for k, v in value.items()}
        if out.get('type') in ('SyncBN', 'MMSyncBN', 'TorchSyncBN', 'CPUSyncBN'):
            out['type'] = 'BN'
        return out
    if isinstance(value, list):
        return [_as_one_process(v) for v in value]
    return value


def _num_classes(value, found: Optional[List[int]] = None) -> List[int]:
    found = [] if found is None else found
    if isinstance(value, dict):
        for key, v in value.items():
            if key in ('num_classes', 'num_things_classes') and isinstance(v, int) and v > 0:
                found.append(v)
            _num_classes(v, found)
    elif isinstance(value, list):
        for v in value:
            _num_classes(v, found)
    return found


def _model_cfg(cfg: Config, toolbox: str) -> ConfigDict:
    model = ConfigDict(_as_one_process(cfg.to_dict()['model']))
    inner = model['detector'] if 'backbone' not in model and 'detector' in model else model
    inner.pop('pretrained', None)
    if backbone_type(inner['backbone']) != 'FishNet':
        inner['backbone'].pop('init_cfg', None)  # the ResNet's ImageNet file: not loaded here
    preprocessor = inner.get('data_preprocessor') or {}
    if toolbox == 'mmseg' and preprocessor.get('size') is not None:
        preprocessor['size'] = (SEG_SIZE, SEG_SIZE)
    return model


def _det_batch(num_classes: int) -> dict:
    from mmdet.testing import demo_mm_inputs

    batch = demo_mm_inputs(
        batch_size=1,
        image_shapes=[(3, DET_SIZE, DET_SIZE)],
        num_items=[3],
        num_classes=max(num_classes, 2),  # it draws labels in [1, num_classes)
        with_mask=True,
        with_semantic=num_classes < 256,  # drawn as uint8 (LVIS, V3Det, Open Images have more)
    )
    for sample in batch['data_samples']:  # one-class datasets (CrowdHuman, WIDER FACE)
        sample.gt_instances.labels = sample.gt_instances.labels.clamp(max=num_classes - 1)
    return batch


def _seg_batch(num_classes: int) -> dict:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(
            torch.randint(0, 256, (3, SEG_SIZE, SEG_SIZE), dtype=torch.uint8, generator=generator)
        )
        shape = (SEG_SIZE, SEG_SIZE)
        sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape))
        labels = torch.randint(0, num_classes, (1, *shape), generator=generator)
        sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def build_model(cfg: Config, toolbox: str) -> torch.nn.Module:
    """The config's model as one CPU process runs it (SyncBN as BN, no ResNet weights),
    initialised as the recipe initialises it."""
    registry = __import__(f'{toolbox}.registry', fromlist=['MODELS']).MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(toolbox):
        model = registry.build(_model_cfg(cfg, toolbox))
        model.init_weights()  # the recipe's initialisation (focal-loss priors, ...)
    return model


def step(model: torch.nn.Module, cfg: Config, toolbox: str) -> float:
    """One training step (loss, backward) on a random batch; the loss. Raises on a failure."""
    classes = _num_classes(cfg.to_dict()['model'])
    num_classes = min(classes) if classes else 10
    torch.manual_seed(0)
    model.train()
    with DefaultScope.overwrite_default_scope(toolbox):
        batch = _det_batch(num_classes) if toolbox == 'mmdet' else _seg_batch(num_classes)
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f'the loss is {loss.item()}')
    loss.backward()
    backbone = getattr(model, 'backbone', None) or model.detector.backbone
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters()):
        raise RuntimeError('the backbone got no gradient')
    return loss.item()


def train_step(cfg: Config, toolbox: str) -> None:
    """Build the config's model and run one training step; raises on any failure."""
    step(build_model(cfg, toolbox), cfg, toolbox)


def _why(error: BaseException) -> str:
    """The error as one short table cell: its type and first line, without memory addresses."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else ''
    message = re.sub(r'0x[0-9a-f]+', '0x...', message).replace('|', '/').replace('`', "'")
    message = ' '.join(message.split())
    text = f'{type(error).__name__}: {message}' if message else type(error).__name__
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3].rstrip() + '...'


def _attempt(step) -> Optional[str]:
    try:
        step()
    except Exception as error:  # the table says why
        return _why(error)
    finally:
        gc.collect()
    return None


def _fishnet_step(cfg: Config, toolbox: str, path: str) -> Optional[str]:
    """FishNet's step on the swapped config: None when it works, else why not."""
    try:
        swapped = swap_backbone(cfg, config_reference(path), ARCH, checkpoint=None).config()
    except Exception as error:  # SwapError, or a config the swap cannot even read
        return _why(error)
    return _attempt(lambda: train_step(swapped, toolbox))


def run_family(toolbox: str, family: str, path: str) -> Row:
    """The family's row: FishNet's step; where it fails, ResNet's says whether the family
    trains here at all."""
    start = time.perf_counter()
    config = osp.relpath(path, configs_root(toolbox))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        cfg = Config.fromfile(path)
        failed = _fishnet_step(cfg, toolbox, path)
        if failed is None:
            result, why = 'works', ''
        else:
            resnet_failed = _attempt(lambda: train_step(cfg, toolbox))
            if resnet_failed is not None:
                result, why = 'n-a', f'ResNet: {resnet_failed}'
            else:
                result, why = 'fails', failed
    return Row(toolbox, family, config, result, why, time.perf_counter() - start)


# ---------------------------------------------------------------------------------- the table
def counts(rows: Sequence[Row]) -> Dict[str, Dict[str, int]]:
    """Per toolbox: how many families work, fail, are n-a."""
    out: Dict[str, Dict[str, int]] = {}
    for row in rows:
        tally = out.setdefault(row.toolbox, {'works': 0, 'fails': 0, 'n-a': 0})
        tally[row.result] += 1
    return out


def table(rows: Sequence[Row]) -> str:
    """The Markdown the page holds between its markers: the counts, then one row a family."""
    lines = []
    for toolbox, tally in counts(rows).items():
        total = sum(tally.values())
        lines.append(
            f'- {toolbox}: {total} families; FishNet **works in {tally["works"]}**, fails in '
            f'{tally["fails"]}, n-a in {tally["n-a"]} (ResNet itself does not train here)'
        )
    lines += ['', '| toolbox | family | config | FishNet | why |', '|---|---|---|---|---|']
    lines += [row.cells() for row in rows]
    return '\n'.join(lines)


def page_table(page: str) -> str:
    """The generated part of docs/zoo.md (between the markers)."""
    if BEGIN not in page or END not in page:
        raise CliError(f'the page has no matrix markers: add the lines {BEGIN} and {END}')
    return page.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def with_table(page: str, generated: str) -> str:
    head, rest = page.split(BEGIN, 1)
    return f'{head}{BEGIN}\n{generated}\n{END}{rest.split(END, 1)[1]}'


def _run_task(task: Tuple[str, str, str, int]) -> Row:
    toolbox, family, path, threads = task
    torch.set_num_threads(threads)
    logging.getLogger().setLevel(logging.WARNING)
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # no init_weights report
    try:
        return run_family(toolbox, family, path)
    except Exception as error:  # a row all the same: the config does not even read here
        config = osp.relpath(path, configs_root(toolbox))
        return Row(toolbox, family, config, 'n-a', f'config: {_why(error)}', 0.0)


def read_cache(path: Optional[str]) -> Dict[Tuple[str, str, str], Row]:
    """The rows a run wrote to ``--cache`` (JSON lines), by (toolbox, family, config)."""
    rows: Dict[Tuple[str, str, str], Row] = {}
    if path and osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            for line in f:
                if line.strip():
                    row = Row(*json.loads(line))
                    rows[row[:3]] = row
    return rows


def run(
    toolboxes: Sequence[str],
    families: Optional[Sequence[str]] = None,
    jobs: int = 1,
    log=print,
    cache: Optional[str] = None,
) -> List[Row]:
    """The matrix's rows (optionally only the named family folders), ``jobs`` families at a
    time (each in its own process, one thread each, when more than one). With ``cache``, the
    rows found there are not run again, and each new row is appended to it as it comes."""
    cached = read_cache(cache)
    tasks, rows_at = [], {}
    for toolbox in toolboxes:
        for family, path in family_configs(toolbox):
            if families and family not in families:
                continue
            key = (toolbox, family, osp.relpath(path, configs_root(toolbox)))
            rows_at[key] = cached.get(key)
            if key not in cached:
                threads = 1 if jobs > 1 else torch.get_num_threads()
                tasks.append((toolbox, family, path, threads))
    if jobs > 1:
        # fresh workers now and then: memory grows over a worker's models
        pool = multiprocessing.get_context('spawn').Pool(jobs, maxtasksperchild=8)
        results = pool.imap_unordered(_run_task, tasks)
    else:
        pool, results = None, map(_run_task, tasks)
    try:
        for row in results:
            log(f'{row.toolbox} {row.family}: {row.result} {row.why} ({row.seconds:.1f} s)')
            rows_at[row[:3]] = row
            if cache:
                with open(cache, 'a', encoding='utf-8') as f:
                    f.write(json.dumps(list(row)) + '\n')
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return list(rows_at.values())


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--toolbox', choices=TOOLBOXES, action='append', help='(default: both)')
    parser.add_argument('--family', action='append', help='only this family folder (repeatable)')
    parser.add_argument('--write', metavar='PAGE', help='replace the table in this page')
    parser.add_argument(
        '--jobs', type=int, default=1, help='families run at a time, one process each (default 1)'
    )
    parser.add_argument(
        '--cache',
        metavar='FILE',
        help='JSON lines of rows: those in it are not run again, new ones are appended (resume '
        'an interrupted run)',
    )
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.write and args.family:
        raise CliError('--write needs the whole matrix: drop --family')
    if args.write and not osp.isfile(args.write):
        raise CliError(f'--write {args.write}: no such page')
    start = time.perf_counter()
    rows = run(args.toolbox or TOOLBOXES, args.family, args.jobs, cache=args.cache)
    generated = table(rows)
    print(generated, flush=True)
    print(f'matrix run: {time.perf_counter() - start:.0f} s')
    if args.write:
        with open(args.write, encoding='utf-8') as f:
            page = f.read()
        page_table(page)
        write_text_atomically(args.write, with_table(page, generated))


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', '2')
    sys.exit(run_cli(main))
