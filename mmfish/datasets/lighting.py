"""The authors' colour augmentation for ImageNet training, as a data transform.

The reference's training (``ColorAugmentation`` in github.com/kevin-ssy/FishNet) adds, to each
image tensor in [0, 1] before normalisation, ``(eig_val * alpha) @ eig_vec`` with
``alpha ~ N(0, 0.1)`` per image, one value per RGB channel. :class:`FishNetLighting` adds the same
quantity on the 0-255 scale of a loaded (BGR) image and returns it as float32, unclipped, as the
reference's float tensor is (mmpretrain's ``Lighting`` casts back to the image's uint8, where a
sum outside 0-255 wraps around).

The authors' code pairs eigenvalue ``i`` with row ``i`` of their matrix, which is not the
eigenvector of the usual ImageNet PCA for that eigenvalue; the transform keeps their pairing, as
their trained weights saw it.
"""

from typing import Dict, Sequence

import numpy as np

from mmfish.registry import register_transform

# The reference's values (utils/data_aug.py), RGB, for images in [0, 1].
REFERENCE_EIGVAL = (0.2175, 0.0188, 0.0045)
REFERENCE_EIGVEC = (
    (0.4009, 0.7192, -0.5675),
    (-0.8140, -0.0045, -0.5808),
    (0.4203, -0.6948, -0.5836),
)


@register_transform
class FishNetLighting:
    """Add the reference's PCA colour noise to ``results['img']`` (float32 afterwards).

    Args:
        alphastd: Standard deviation of each component's random weight.
        eigval: The three eigenvalues (for images in [0, 1]).
        eigvec: Row ``i`` is the RGB direction scaled by ``eigval[i]``.
        bgr: Whether the image's channels are BGR (mmcv's loading; mmpretrain's data
            preprocessor converts to RGB later).
    """

    def __init__(
        self,
        alphastd: float = 0.1,
        eigval: Sequence[float] = REFERENCE_EIGVAL,
        eigvec: Sequence[Sequence[float]] = REFERENCE_EIGVEC,
        bgr: bool = True,
    ) -> None:
        self.alphastd = float(alphastd)
        self.eigval = np.asarray(eigval, dtype=np.float64)
        self.eigvec = np.asarray(eigvec, dtype=np.float64)
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ValueError('FishNetLighting needs 3 eigenvalues and a 3x3 matrix of eigenvectors')
        self.bgr = bgr

    def __call__(self, results: Dict) -> Dict:
        img = results['img']
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'FishNetLighting needs an HxWx3 image, got shape {img.shape}')
        alpha = np.random.normal(0.0, self.alphastd, size=3)
        rgb_shift = (self.eigval * alpha) @ self.eigvec * 255.0
        shift = rgb_shift[::-1] if self.bgr else rgb_shift
        results['img'] = img.astype(np.float32) + shift.astype(np.float32)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(alphastd={self.alphastd}, bgr={self.bgr})'


__all__ = ['FishNetLighting', 'REFERENCE_EIGVAL', 'REFERENCE_EIGVEC']
