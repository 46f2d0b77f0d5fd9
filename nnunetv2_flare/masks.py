"""The bounding box of a mask's foreground: one helper for the cascade's crop, the training crop, the pseudo-label
crop and the evaluation's surface computations."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def foreground_box(mask: np.ndarray, margin: int | Sequence[int] = 0
                   ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Half-open index bounds (lo, hi) of the True voxels per axis, grown by `margin` voxels per side (one number,
    or one per axis) and clipped to the array; None when no voxel is True."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    margins = [int(margin)] * mask.ndim if np.isscalar(margin) else [int(m) for m in margin]
    lo, hi = [], []
    for axis, m in zip(range(mask.ndim), margins):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(max(0, int(idx[0]) - m))
        hi.append(min(mask.shape[axis], int(idx[-1]) + 1 + m))
    return tuple(lo), tuple(hi)


def margin_voxels(margin_mm: float, spacing: Sequence[float]) -> tuple[int, ...]:
    """A margin in mm as whole voxels per axis (rounded up), for `spacing` in the mask's axis order."""
    return tuple(int(math.ceil(margin_mm / float(s))) for s in spacing)
