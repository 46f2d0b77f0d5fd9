"""Following organs out of the locator's box (`follow_organs`, opt-in).

Phase 2 can only label what lies in the box Phase 1 found. When the organ labels reach a face of that box (and the
face is not the scan's edge), the organ probably goes on beyond it: the box is grown on that face by half a patch
of the organ network, Phase 2 runs on the new slab (with half a patch of the old box as context), and the new labels
are taken *outside the old box only*, and only where they connect to the same organ in the old box: everything
already labelled stays as it was, and what the slab finds that does not continue an organ of the box (a stray piece,
an organ the box did not hold) is dropped. Rounds stop when no label reaches a face that can grow. Measured on the
demo (docs/demo.md): its locator, trained for minutes, misses the thoracic ends of the aorta and esophagus in long
scans.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from nnunetv2_flare.inference.geometry import Box

Face = tuple[int, int]  # (axis in array order z, y, x; side: 0 = low, 1 = high)


def touched_faces(labels: np.ndarray, box: Box, volume_shape: Sequence[int]) -> list[Face]:
    """The faces of `box` that hold a label (> 0) of `labels` (the box's labels, shape box.shape) and that are not on
    the edge of the volume."""
    faces = []
    for axis in range(3):
        if box.start[axis] > 0 and np.take(labels, 0, axis=axis).any():
            faces.append((axis, 0))
        if box.stop[axis] < volume_shape[axis] and np.take(labels, labels.shape[axis] - 1, axis=axis).any():
            faces.append((axis, 1))
    return faces


def half_patch_voxels(patch_size: Sequence[int], organ_spacing: Sequence[float],
                      spacing: Sequence[float]) -> tuple[int, ...]:
    """Half the organ network's patch, per axis, in voxels of the input grid (all in array order)."""
    return tuple(max(1, math.ceil(p * t / 2 / s)) for p, t, s in zip(patch_size, organ_spacing, spacing))


def grow_box(box: Box, faces: Sequence[Face], step: Sequence[int], volume_shape: Sequence[int]) -> Box:
    """`box` moved outward by `step` voxels on each of `faces`, clipped to the volume."""
    start, stop = list(box.start), list(box.stop)
    for axis, side in faces:
        if side == 0:
            start[axis] = max(0, start[axis] - int(step[axis]))
        else:
            stop[axis] = min(int(volume_shape[axis]), stop[axis] + int(step[axis]))
    return Box(tuple(start), tuple(stop))


def extension_slabs(old: Box, grown: Box, faces: Sequence[Face], context: Sequence[int]) -> list[Box]:
    """For each grown face, the slab of `grown` beyond `old` plus `context` voxels into `old` (so the network sees
    where the organ comes from); the slabs span `grown`'s whole extent on the other axes, so together they cover
    every voxel of `grown` outside `old`."""
    slabs = []
    for axis, side in faces:
        start, stop = list(grown.start), list(grown.stop)
        if side == 0:
            stop[axis] = min(old.stop[axis], old.start[axis] + int(context[axis]))
        else:
            start[axis] = max(old.start[axis], old.stop[axis] - int(context[axis]))
        slabs.append(Box(tuple(start), tuple(stop)))
    return slabs


def relative(inner: Box, outer: Box) -> tuple[slice, slice, slice]:
    """Slices of `inner` within an array covering `outer`."""
    return tuple(slice(a - o, b - o) for a, b, o in zip(inner.start, inner.stop, outer.start))


def outside_mask(region: Box, old: Box) -> np.ndarray:
    """True where a voxel of `region` lies outside `old`."""
    mask = np.ones(region.shape, dtype=bool)
    lo = [min(max(a, r0), r1) for a, r0, r1 in zip(old.start, region.start, region.stop)]
    hi = [min(max(b, r0), r1) for b, r0, r1 in zip(old.stop, region.start, region.stop)]
    mask[relative(Box(tuple(lo), tuple(hi)), region)] = False
    return mask

