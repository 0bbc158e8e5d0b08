"""What makes one annotation unusable: a box or a polygon that no training step can use.

Shared by the data checks run before training (:mod:`mmfish.datasets.data_checks`, on the COCO
file's ``[x, y, w, h]`` boxes and ``segmentation`` polygons) and by the check of each sample as
it is loaded (:class:`mmfish.datasets.keyed.KeyedDataset`, on mmdet's parsed ``instances``, whose
boxes are ``[x1, y1, x2, y2]``). Each function returns a short description of the problem, or
None when the annotation is fine.

- A **box** is bad when a coordinate is not a finite number, or when its width or height is
  negative. (mmdet's ``CocoDataset`` silently drops a COCO annotation whose box has a NaN, a
  negative or a sub-pixel side, and keeps one whose width is infinite: a loss of NaN follows.)
- A **polygon** is bad when it is empty, has fewer than three points or an odd number of
  coordinates, or a coordinate that is not finite; and, where asked for, when two of its edges
  cross (self-intersecting: pycocotools fills it by the even-odd rule, leaving holes that are no
  part of the object, but the mask is still a mask, and hand-drawn annotations may hold such
  polygons: the data checks do not look for them, which costs about 0.2 ms a polygon, and a
  loaded sample is skipped for one only with ``train_cfg.skip_self_intersecting=True``).
  Polygons that only touch themselves at a vertex, or that have repeated points, pass. RLE
  masks (crowd annotations) are not checked.
"""

import math
import numbers
from typing import Any, List, Optional, Sequence

import numpy as np

SELF_INTERSECTING = 'self-intersecting polygon'


def _all_numbers(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
    )


def box_problem(box: Any, xyxy: bool = False) -> Optional[str]:
    """What is wrong with a box (``[x, y, w, h]``, or ``[x1, y1, x2, y2]`` if ``xyxy``)."""
    if not (_all_numbers(box) and len(box) == 4):
        return f'not 4 numbers: {box!r}'
    if not all(math.isfinite(v) for v in box):
        return f'non-finite box {list(box)}'
    width, height = (box[2] - box[0], box[3] - box[1]) if xyxy else (box[2], box[3])
    if width < 0 or height < 0:
        return f'negative-size box {list(box)}'
    return None


def _edges_cross(points: np.ndarray) -> bool:
    """Whether two non-adjacent edges of a closed polygon cross (properly, at one point)."""
    a = points
    b = np.roll(points, -1, axis=0)
    n = len(points)
    i, j = np.triu_indices(n, k=2)
    keep = ~((i == 0) & (j == n - 1))  # the last edge is adjacent to the first
    i, j = i[keep], j[keep]
    if not len(i):
        return False

    def orient(p, q, r):
        return np.sign(
            (q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0])
        )

    p1, p2, q1, q2 = a[i], b[i], a[j], b[j]
    crosses = (orient(p1, p2, q1) * orient(p1, p2, q2) < 0) & (
        orient(q1, q2, p1) * orient(q1, q2, p2) < 0
    )
    return bool(crosses.any())


def polygon_problem(polygon: Any, self_intersecting: bool = True) -> Optional[str]:
    """What is wrong with one polygon, a flat list ``[x1, y1, x2, y2, ...]``.

    Args:
        polygon: The polygon.
        self_intersecting: Whether crossing edges are looked for (0.2 ms for a 32-gon).
    """
    if not isinstance(polygon, (list, tuple, np.ndarray)) or len(polygon) == 0:
        return 'empty polygon'
    try:
        total = sum(polygon)  # fast: the data checks run this on every polygon of a dataset
        total = float(total)
    except (TypeError, ValueError):
        return 'polygon of non-numbers'
    if len(polygon) % 2 or len(polygon) < 6:
        return f'polygon of {len(polygon)} coordinates (needs an even number, at least 6)'
    if not math.isfinite(total):
        return 'polygon with a non-finite coordinate'
    if not self_intersecting:
        return None
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if _edges_cross(points):
        return SELF_INTERSECTING
    return None


def segmentation_problem(segmentation: Any, self_intersecting: bool = True) -> Optional[str]:
    """What is wrong with a COCO ``segmentation``: a list of polygons (an RLE dict passes)."""
    if isinstance(segmentation, dict):
        return None
    if not isinstance(segmentation, (list, tuple)) or not segmentation:
        return 'empty segmentation'
    for polygon in segmentation:
        problem = polygon_problem(polygon, self_intersecting)
        if problem:
            return problem
    return None


def instance_problems(instances: Sequence[Any], self_intersecting: bool = False) -> List[str]:
    """The problems of a loaded sample's ``instances`` (mmdet's: xyxy boxes, ``mask``).

    Args:
        instances: The data info's ``instances``.
        self_intersecting: Whether a self-intersecting polygon is a problem.
    """
    problems = []
    for n, instance in enumerate(instances or ()):
        if not isinstance(instance, dict):
            continue
        if 'bbox' in instance:
            problem = box_problem(instance['bbox'], xyxy=True)
            if problem:
                problems.append(f'instance {n}: {problem}')
        if 'mask' in instance:
            problem = segmentation_problem(instance['mask'], self_intersecting)
            if problem:
                problems.append(f'instance {n}: {problem}')
    return problems
