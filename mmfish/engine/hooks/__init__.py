"""Training hooks."""

from .checkpoint_hook import (
    INTERRUPTED_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    CheckpointWriteError,
    FaultTolerantCheckpointHook,
    TrainingInterrupted,
    TrainingPreempted,
)
from .non_finite import DEFAULT_MAX_CONSECUTIVE, NonFiniteStepHook, NonFiniteTrainingError

__all__ = [
    'DEFAULT_MAX_CONSECUTIVE',
    'INTERRUPTED_EXIT_CODE',
    'PREEMPTED_EXIT_CODE',
    'CheckpointWriteError',
    'FaultTolerantCheckpointHook',
    'NonFiniteStepHook',
    'NonFiniteTrainingError',
    'TrainingInterrupted',
    'TrainingPreempted',
]
