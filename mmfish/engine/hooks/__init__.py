"""Training hooks."""

from .checkpoint_hook import PREEMPTED_EXIT_CODE, FaultTolerantCheckpointHook, TrainingPreempted

__all__ = ['PREEMPTED_EXIT_CODE', 'FaultTolerantCheckpointHook', 'TrainingPreempted']
