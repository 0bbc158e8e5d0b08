"""The random-number states that training draws from, as checkpoint-safe data.

A training step draws from four generators: Python's ``random`` (some mmcv transforms), numpy's
global generator (mmcv's ``RandomFlip`` and most mmdet transforms), torch's CPU generator (mmdet's
``RandomSampler`` of anchors and RoIs, dropout) and, on a GPU, torch's CUDA generators. mmengine
seeds them once at start-up and saves none of them in a checkpoint, so a resumed run draws other
numbers than the uninterrupted one. :func:`get_rng_states` captures all four as tensors and plain
Python values (what ``torch.load(weights_only=True)`` accepts without any allow-listing) and
:func:`set_rng_states` puts them back.
"""

import random
from contextlib import contextmanager
from typing import Any, Dict, Iterator

import numpy as np
import torch

RngStates = Dict[str, Any]


def get_rng_states() -> RngStates:
    """The current states of Python's, numpy's and torch's (CPU and CUDA) global generators.

    The CUDA states are read only where CUDA is already initialised: reading them would otherwise
    start a CUDA context on a process that never uses the GPU.
    """
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
    return dict(
        python=random.getstate(),
        numpy=dict(
            bit_generator=name,
            key=torch.from_numpy(key.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached_gaussian),
        ),
        torch=torch.get_rng_state(),
        cuda=cuda,
    )


def set_rng_states(states: RngStates) -> None:
    """Restore the states captured by :func:`get_rng_states`.

    Raises:
        ValueError: ``states`` holds CUDA states for another number of devices than this process
            sees (the generators of a machine with another GPU count cannot be matched).
    """
    random.setstate(states['python'])
    np_state = states['numpy']
    np.random.set_state(
        (
            np_state['bit_generator'],
            np_state['key'].numpy().astype(np.uint32),
            np_state['pos'],
            np_state['has_gauss'],
            np_state['cached_gaussian'],
        )
    )
    torch.set_rng_state(states['torch'])
    cuda = states.get('cuda') or []
    if cuda:
        if not torch.cuda.is_available() or len(cuda) != torch.cuda.device_count():
            visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ValueError(
                f'the checkpoint holds the random states of {len(cuda)} CUDA device(s), this '
                f'process sees {visible}: resume on the same devices to follow the same random path'
            )
        torch.cuda.set_rng_state_all(cuda)


@contextmanager
def preserved_rng_states() -> Iterator[RngStates]:
    """Run a block without changing the global random states (yields the states kept).

    Training wraps validation in it, so that validating (whose data loader draws a seed from
    torch's generator) does not change the random path of the training that follows, and so that
    a run resumed after an evaluation continues exactly as one that was never stopped.
    """
    states = get_rng_states()
    try:
        yield states
    finally:
        set_rng_states(states)
