"""Runner-level pieces: the resumable train loops and their random states, checkpoint loading under
torch >= 2.6, distributed runs on CPUs."""

from .checkpoint_compat import allow_mmengine_checkpoints
from .dist import setup_cpu_distributed
from .loops import ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop
from .random_state import get_rng_states, preserved_rng_states, set_rng_states

__all__ = [
    'ResumableEpochBasedTrainLoop',
    'ResumableIterBasedTrainLoop',
    'allow_mmengine_checkpoints',
    'get_rng_states',
    'preserved_rng_states',
    'set_rng_states',
    'setup_cpu_distributed',
]
