"""mmfish registers its modules straight into MMDetection's registries."""

from mmdet.registry import DATASETS, HOOKS, LOOPS, METRICS, MODELS, TRANSFORMS

__all__ = ['DATASETS', 'HOOKS', 'LOOPS', 'METRICS', 'MODELS', 'TRANSFORMS']
