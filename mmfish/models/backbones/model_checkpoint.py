"""Refuse a whole model's checkpoint (``tools/test.py CONFIG CHECKPOINT``, ``load_from``) whose
FishNet is another variant than the config's.

mmengine loads such a file non-strictly: it logs the keys and shapes it cannot place and goes on
with the rest of the backbone at its random initialisation, so a FishNet-99 classifier tested
with a FishNet-150 config prints an accuracy near chance and no error. The variant a file holds
is its converter meta's ``arch`` or, for a trained checkpoint, the one with its block counts.
"""

import os.path as osp
from typing import Mapping, Optional

from mmengine.runner.checkpoint import _load_checkpoint

from mmfish.utils.errors import UserInputError

from .variants import ARCH_SETTINGS, block_counts, variant_of_counts

BACKBONE_PREFIX = 'backbone.'


class CheckpointVariantError(UserInputError):
    """A model checkpoint holds another FishNet variant than the config builds."""


def config_variant(cfg: Mapping) -> Optional[str]:
    """The FishNet variant a config's model builds, or None (no FishNet, a custom arch)."""
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    if str(backbone.get('type', '')).split('.')[-1] != 'FishNet':
        return None
    arch = backbone.get('arch', 'fishnet150')
    return arch if isinstance(arch, str) and arch in ARCH_SETTINGS else None


def checkpoint_variant(checkpoint: Mapping) -> Optional[str]:
    """The FishNet variant of a loaded whole-model checkpoint, or None if it holds no
    FishNet backbone it can tell."""
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), Mapping) else {}
    if meta.get('arch') in ARCH_SETTINGS:
        return meta['arch']
    state_dict = checkpoint.get('state_dict', checkpoint)
    keys = [k[len(BACKBONE_PREFIX) :] for k in state_dict if k.startswith(BACKBONE_PREFIX)]
    return variant_of_counts(block_counts(keys)) if keys else None


def check_model_checkpoint(cfg: Mapping, path: str, config_path: str = '') -> None:
    """Raise :class:`CheckpointVariantError` if ``path`` holds another FishNet variant than
    ``cfg`` builds (FishNeXt-150 and FishNet-150 have the same blocks: not told apart)."""
    wanted = config_variant(cfg)
    if wanted is None or not osp.isfile(path):
        return
    holds = checkpoint_variant(_load_checkpoint(path, map_location='cpu'))
    if holds is None or holds == wanted or {holds, wanted} == {'fishnet150', 'fishnext150'}:
        return
    other_config = osp.basename(config_path).replace(wanted, holds) if wanted in config_path else ''
    config_hint = (
        f' (e.g. {osp.join(osp.dirname(config_path), other_config)})' if other_config else ''
    )
    raise CheckpointVariantError(
        f'{path} holds a FishNet {holds!r} model, but the config builds {wanted!r}: use a '
        f'{holds} config{config_hint} with this file, or a {wanted} checkpoint with this config'
    )


__all__ = [
    'CheckpointVariantError',
    'check_model_checkpoint',
    'checkpoint_variant',
    'config_variant',
]
