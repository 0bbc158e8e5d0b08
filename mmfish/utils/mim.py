"""Where mmfish's configs, tools and model index are, the ``mmfish::`` config names, and the
commands a user types to run a tool.

mmfish is used in two ways, and this module is the one place that tells them apart:

- **from a checkout** (``python tools/train.py configs/...``, an editable install, or the
  repository on ``PYTHONPATH``): ``configs/``, ``tools/`` and ``model-index.yml`` sit beside the
  ``mmfish/`` package;
- **installed from a wheel** (``pip install .``): ``setup.py`` ships copies of them in
  ``mmfish/.mim/``, as MMDetection ships ``mmdet/.mim/``; the console commands ``mmfish-train``,
  ``mmfish-test`` and ``mmfish-convert`` run the shipped ``tools/train.py``, ``tools/test.py`` and
  ``tools/model_converters/fishnet2mmdet.py`` (:mod:`mmfish.tools_entry`).

A checkout wins when both exist, so that a checkout always reads its own, current files.

``mmfish::`` config names
    ``import mmfish`` calls :func:`register_config_scope`, after which a config's ``_base_`` may
    name ``mmfish::mask_rcnn_fishnet150_fpn_1x_coco.py`` (a path under ``configs/``, e.g. also
    ``mmfish::segmentation/fpn_fishnet150_4xb2-80k_cityscapes-512x1024.py``) or a model name of
    ``model-index.yml`` (``mmfish::fpn_fishnet150_4xb2-80k_cityscapes-512x1024``), as it names
    ``mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py``. mmengine 0.10.7 reads ``pkg::`` paths in
    :meth:`mmengine.config.Config._get_cfg_path` only for OpenMMLab's own packages: the name must
    be a key of ``mmengine.config.utils.MODULE2PACKAGE`` and match ``\\w*::\\w*/\\w*`` (a folder
    is required, which mmfish's top-level configs do not have), and the package is then located
    through ``pkg_resources`` (which finds the installed distribution, not a checkout on
    ``PYTHONPATH``) and read from its ``.mim/configs`` (which a checkout does not have).

    What is patched, and nothing else: the one static method ``Config._get_cfg_path`` is
    replaced by a wrapper that resolves a path starting with ``mmfish::`` with
    :func:`config_path` (this module's own lookup, in the files of the imported ``mmfish``);
    every other path goes to mmengine's original method unchanged. ``MODULE2PACKAGE`` is left
    alone (adding mmfish there would also make mmengine's registries fall back to an
    ``mmfish.utils.register_all_modules`` that does not exist), and so are
    :func:`mmengine.hub.get_config` / ``get_model``, which do not know ``mmfish::`` (use
    ``Config.fromfile(config_path('mmfish::NAME'))``).

    The registry scope: for ``mmdet::X`` mmengine returns the scope ``'mmdet'``, and sets
    ``_scope_='mmdet'`` on the base's top-level dicts that have a ``type`` and no scope yet, so
    that they build from mmdet's registries. The wrapper returns no scope (None) for
    ``mmfish::X``, the scope mmengine gives a base named by its file path: ``mmfish::X`` then
    reads exactly as ``_base_ = '<checkout>/configs/X'`` does. An mmfish config is an mmdet or
    an mmseg config (its ``default_scope`` says which) whose mmfish modules are registered in
    that toolbox's registries; one ``'mmfish'`` scope would send the mmseg transforms, datasets,
    metrics and hooks that the segmentation configs define (e.g. ``PackSegInputs``,
    ``IoUMetric`` in ``segmentation/demo/fpn_fishnet99_shapes_cpu.py``) to registries that must
    also hold mmdet's. :data:`BASE_SCOPE` is that choice.

    mmengine knows the prefix once ``mmfish`` is imported: mmfish's tools and console commands
    import it before reading a config; another program must ``import mmfish`` before
    ``Config.fromfile`` reads a config whose ``_base_`` names ``mmfish::`` (mmengine resolves
    ``_base_`` before it runs the config's ``custom_imports``).
"""

import os.path as osp
from typing import Dict, Optional, Tuple

import yaml
from mmengine.config import Config

PREFIX = 'mmfish::'
BASE_SCOPE: Optional[str] = None  # the registry scope of an mmfish:: base (module docstring)

PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
MIM_DIR = osp.join(PACKAGE_DIR, '.mim')  # what a wheel ships (setup.py writes it)
CHECKOUT_DIR = osp.dirname(PACKAGE_DIR)  # the repository, when mmfish runs from one
MODEL_INDEX = 'model-index.yml'

# The console commands (setup.py's entry points, :mod:`mmfish.tools_entry`) and the tool each
# runs, relative to tools/.
COMMANDS: Dict[str, str] = {
    'mmfish-train': 'train.py',
    'mmfish-test': 'test.py',
    'mmfish-convert': 'model_converters/fishnet2mmdet.py',
    'mmfish-swap': 'misc/swap_backbone.py',
}


def is_checkout() -> bool:
    """Whether the imported ``mmfish`` runs from a checkout (its tools and configs beside it)."""
    return osp.isfile(osp.join(CHECKOUT_DIR, 'tools', 'train.py')) and osp.isdir(
        osp.join(CHECKOUT_DIR, 'configs')
    )


def files_root() -> str:
    """The folder holding ``configs/``, ``tools/`` and ``model-index.yml``: the checkout, else
    the installed ``mmfish/.mim``.

    Raises:
        FileNotFoundError: mmfish was installed without them (not built by its ``setup.py``).
    """
    if is_checkout():
        return CHECKOUT_DIR
    if osp.isdir(osp.join(MIM_DIR, 'configs')):
        return MIM_DIR
    raise FileNotFoundError(
        f'mmfish at {PACKAGE_DIR} has neither a checkout around it nor the configs and tools a '
        f'wheel ships in {MIM_DIR}: reinstall it with `pip install <mmfish checkout or wheel>`'
    )


def tool_path(tool: str) -> str:
    """The file of ``tools/<tool>`` (e.g. ``'train.py'``) in this checkout or install."""
    path = osp.join(files_root(), 'tools', *tool.split('/'))
    if not osp.isfile(path):
        raise FileNotFoundError(f'mmfish has no tool tools/{tool} (looked for {path})')
    return path


def tool_command(tool: str) -> str:
    """The command that runs ``tools/<tool>`` for this install, for messages.

    From a checkout: ``python tools/<tool>`` (``bash`` for a shell script), run from the
    repository; installed: the console command when there is one (``mmfish-convert``), else the
    shipped file (``python .../mmfish/.mim/tools/<tool>``).
    """
    runner = 'bash' if tool.endswith('.sh') else 'python'
    if is_checkout():
        return f'{runner} tools/{tool}'
    for command, commanded in COMMANDS.items():
        if commanded == tool:
            return command
    return f'{runner} {osp.join(MIM_DIR, "tools", *tool.split("/"))}'


def config_reference(config: str) -> str:
    """How the user names ``configs/<config>``: that path in a checkout, ``mmfish::<config>``
    installed (it may hold ``str.format`` fields, kept as they are)."""
    return f'configs/{config}' if is_checkout() else f'{PREFIX}{config}'


def model_index() -> Dict[str, str]:
    """Model name -> config path (relative to :func:`files_root`), from ``model-index.yml`` and
    the metafiles it imports."""
    root = files_root()
    with open(osp.join(root, MODEL_INDEX), encoding='utf-8') as f:
        index = yaml.safe_load(f)
    configs: Dict[str, str] = {}
    for metafile in index['Import']:
        with open(osp.join(root, metafile), encoding='utf-8') as f:
            for model in yaml.safe_load(f)['Models']:
                configs.setdefault(model['Name'], model['Config'])
    return configs


def config_path(name: str) -> str:
    """The file of an ``mmfish::`` config name (the prefix is optional).

    ``NAME`` is tried as a path under ``configs/`` (``mask_rcnn_fishnet150_fpn_1x_coco.py``,
    ``segmentation/_base_/fishnet150.py``), then, without its ``.py``, as a model name of
    ``model-index.yml``.

    Raises:
        FileNotFoundError: neither names a config; the message says what does.
    """
    relative = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    root = files_root()
    path = osp.join(root, 'configs', *relative.split('/'))
    if osp.isfile(path):
        return path
    model = relative[: -len('.py')] if relative.endswith('.py') else relative
    indexed = model_index().get(model)
    if indexed is not None:
        return osp.join(root, *indexed.split('/'))
    raise FileNotFoundError(
        f'{PREFIX}{relative} names no mmfish config: give a path under {osp.join(root, "configs")} '
        f'(e.g. {PREFIX}mask_rcnn_fishnet150_fpn_1x_coco.py) or a model name of '
        f'{osp.join(root, MODEL_INDEX)}'
    )


def resolve_config(config: str) -> str:
    """A tool's config argument as a file: ``pkg::NAME`` through mmengine (``mmfish::`` with
    :func:`config_path`), anything else unchanged.

    Raises:
        FileNotFoundError: ``pkg::NAME`` names no config (mmengine's reason in the message).
    """
    if '::' not in config:
        return config
    try:
        return Config._get_cfg_path(config, '')[0]
    except (AssertionError, ValueError, ModuleNotFoundError) as error:  # mmengine's refusals
        raise FileNotFoundError(f'config {config} cannot be found: {error}') from error


def register_config_scope() -> None:
    """Teach mmengine's ``Config`` the ``mmfish::`` prefix (module docstring); idempotent."""
    original = Config._get_cfg_path
    if getattr(original, '_mmfish_scope', False):
        return

    def _get_cfg_path(cfg_path: str, filename: str) -> Tuple[str, Optional[str]]:
        if cfg_path.startswith(PREFIX):
            return config_path(cfg_path), BASE_SCOPE
        return original(cfg_path, filename)

    _get_cfg_path._mmfish_scope = True  # type: ignore[attr-defined]
    _get_cfg_path.__doc__ = original.__doc__
    Config._get_cfg_path = staticmethod(_get_cfg_path)
