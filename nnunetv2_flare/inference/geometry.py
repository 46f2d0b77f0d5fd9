"""Voxel grids, boxes and resizing in nnU-Net's array order (z, y, x), with the physical geometry kept exact.

Convention (the one of torch's `align_corners=False` and of nnU-Net's resizing): resizing `n` voxels to `m` maps
output voxel `j` to input continuous index `(j + 0.5) * n / m - 0.5`, so both grids cover the same physical extent.
Every working grid of the cascade (the locator's 128^3, the organ network's resampled crop, each sliding-window
patch) is described by an offset and a scale relative to the input image, from which its physical geometry follows.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

# labels are restored to the input grid this many output slices at a time (a full-size copy of a 1500-slice scan's
# labels would cost GBs)
SLAB_SLICES = 16


@dataclass(frozen=True)
class VoxelGrid:
    """Physical geometry of a voxel grid in SimpleITK's (x, y, z) convention."""
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def subgrid(cls, image: sitk.Image, offset_zyx: Sequence[float], scale_zyx: Sequence[float],
                size_zyx: Sequence[int]) -> "VoxelGrid":
        """The grid whose voxel q (array order) sits at the image's continuous index offset + q * scale."""
        offset_xyz = [float(o) for o in offset_zyx[::-1]]
        spacing = tuple(float(s) * float(k) for s, k in zip(image.GetSpacing(), scale_zyx[::-1]))
        origin = tuple(image.TransformContinuousIndexToPhysicalPoint(offset_xyz))
        return cls(tuple(int(s) for s in size_zyx[::-1]), spacing, origin, tuple(image.GetDirection()))

    def resample(self, image: sitk.Image, interpolator: int = sitk.sitkNearestNeighbor,
                 default_value: float = 0.0) -> sitk.Image:
        """`image` resampled onto this grid in physical space (used by oracles and tests)."""
        f = sitk.ResampleImageFilter()
        f.SetSize([int(s) for s in self.size])
        f.SetOutputSpacing(self.spacing)
        f.SetOutputOrigin(self.origin)
        f.SetOutputDirection(self.direction)
        f.SetInterpolator(interpolator)
        f.SetDefaultPixelValue(default_value)
        return f.Execute(image)


@dataclass(frozen=True)
class Box:
    """A half-open box [start, stop) in array order (z, y, x)."""
    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @classmethod
    def whole(cls, shape: Sequence[int]) -> "Box":
        return cls((0, 0, 0), tuple(int(s) for s in shape))

    def to_report(self, spacing_zyx: Sequence[float]) -> dict:
        """SimpleITK (x, y, z) index order, as users see it in viewers."""
        return {"start_xyz": list(self.start[::-1]), "stop_xyz": list(self.stop[::-1]),
                "size_xyz": list(self.shape[::-1]),
                "size_mm_xyz": [round(n * s, 1) for n, s in zip(self.shape[::-1], spacing_zyx[::-1])]}


def box_from_coarse(lo: Sequence[int], hi: Sequence[int], coarse_shape: Sequence[int], fine_shape: Sequence[int],
                    margin_vox: Sequence[int]) -> Box:
    """Fine-grid box covering coarse voxels [lo, hi) (masks.foreground_box) plus a margin, clipped to the volume.

    Coarse voxel i covers fine continuous extent [i * s, (i + 1) * s) with s = fine / coarse (same physical extent)."""
    start, stop = [], []
    for a, b, c, f, m in zip(lo, hi, coarse_shape, fine_shape, margin_vox):
        s = f / c
        start.append(max(0, int(np.floor(a * s)) - m))
        stop.append(min(f, int(np.ceil(b * s)) + m))
    return Box(tuple(start), tuple(stop))


def working_shape(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], target_zyx: Sequence[float]) -> tuple:
    """nnU-Net's rule: round(shape * spacing / target), at least one voxel."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape_zyx, spacing_zyx, target_zyx))


def _linear_weights(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.clip((np.arange(m) + 0.5) * (n / m) - 0.5, 0, None)  # torch clamps below 0 the same way
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    return i0, np.minimum(i0 + 1, n - 1), (src - i0).astype(np.float32)


def _linear_axis(volume: np.ndarray, m: int, axis: int) -> np.ndarray:
    """Linear resize (align_corners=False) of one axis of a float32 array."""
    if volume.shape[axis] == m:
        return volume
    i0, i1, w1 = _linear_weights(volume.shape[axis], m)
    shape = [1] * volume.ndim
    shape[axis] = m
    w1 = w1.reshape(shape)
    out = np.take(volume, i0, axis=axis)
    out *= 1 - w1
    out += w1 * np.take(volume, i1, axis=axis)
    return out


def _in_plane(volume: np.ndarray, out_yx: Sequence[int]) -> np.ndarray:
    """Linear resize of axes 1 and 2 of a few slices, as float32."""
    return _linear_axis(_linear_axis(volume.astype(np.float32), out_yx[0], 1), out_yx[1], 2)


def resize_linear(volume: np.ndarray, out_shape: Sequence[int], slices_per_chunk: int = 4) -> np.ndarray:
    """Trilinear resize (align_corners=False) of a 3D array of any dtype to a float32 array of `out_shape`.

    Separable, the in-plane axes first, then axis 0, one chunk of output slices at a time: each chunk resizes in
    plane only the input slices it interpolates between (shrinking along axis 0 leaves some slices unused). So only
    the output and a few slices exist as float32, never a float copy of the input nor its in-plane resize (the
    memory a huge scan would otherwise need twice over). Every output voxel sees the same operations in the same order
    as in a whole-volume resize, so the chunking does not change a bit of the result. Small chunks keep the working
    set in cache, which also makes this faster than a whole-volume resize. The weights are torch's trilinear ones;
    NumPy only, so that a prediction on OpenVINO never imports torch (seconds of a cold start)."""
    out_shape = tuple(int(s) for s in out_shape)
    out = np.empty(out_shape, dtype=np.float32)
    if volume.shape[0] == out_shape[0]:  # nothing to interpolate along axis 0
        for start in range(0, out_shape[0], slices_per_chunk):
            out[start:start + slices_per_chunk] = _in_plane(volume[start:start + slices_per_chunk], out_shape[1:])
        return out
    i0, i1, w1 = _linear_weights(volume.shape[0], out_shape[0])
    for start in range(0, out_shape[0], slices_per_chunk):
        rows = slice(start, start + slices_per_chunk)
        used = np.union1d(i0[rows], i1[rows])  # the input slices this chunk interpolates between (only those)
        planes = _in_plane(volume[used], out_shape[1:])
        w = w1[rows][:, None, None]
        chunk = planes[np.searchsorted(used, i0[rows])]
        chunk *= 1 - w
        chunk += w * planes[np.searchsorted(used, i1[rows])]
        out[rows] = chunk
    return out


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output voxel for a nearest-neighbour resize (torch's 'nearest-exact')."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize_nearest(labels: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of a label array (any integer dtype kept)."""
    out = labels
    for axis, (n_in, n_out) in enumerate(zip(labels.shape, out_shape)):
        if n_in != n_out:
            out = np.take(out, nearest_indices(n_in, n_out), axis=axis)
    return np.ascontiguousarray(out)


def resize_nearest_slabs(labels: np.ndarray, out_shape: Sequence[int],
                         slices_per_slab: int = SLAB_SLICES) -> Iterator[tuple[int, np.ndarray]]:
    """`resize_nearest(labels, out_shape)` a slab of output slices at a time: (first slice, slab) pairs. The
    cascade pastes the slabs straight into the label image, so no full-size label array is built on the way."""
    rows = nearest_indices(labels.shape[0], int(out_shape[0]))
    columns = [nearest_indices(n, int(m)) for n, m in zip(labels.shape[1:], out_shape[1:])]
    for start in range(0, len(rows), slices_per_slab):
        slab = np.take(labels, rows[start:start + slices_per_slab], axis=0)
        for axis, index in enumerate(columns, start=1):
            slab = np.take(slab, index, axis=axis)
        yield start, slab


def _mixed_cells(labels: np.ndarray) -> np.ndarray:
    """True where the 2 x 2 x 2 voxels a linear interpolation reads from (the voxel and its successors along each
    axis, clamped at the far faces) do not all hold one label."""
    padded = np.pad(labels, [(0, 1)] * 3, mode="edge")
    mixed = np.zeros(labels.shape, dtype=bool)
    for dz, dy, dx in itertools.product((0, 1), repeat=3):
        if dz or dy or dx:
            mixed |= padded[dz:dz + labels.shape[0], dy:dy + labels.shape[1], dx:dx + labels.shape[2]] != labels
    return mixed


def resize_labels_linear_slabs(labels: np.ndarray, scores: np.ndarray, out_shape: Sequence[int],
                               slices_per_slab: int = SLAB_SLICES) -> Iterator[tuple[int, np.ndarray]]:
    """Like `resize_nearest_slabs`, but each output voxel takes the argmax of the class `scores` (C, *labels.shape)
    interpolated linearly to it, as nnU-Net's export does, among the labels of the voxels it interpolates between.

    Only voxels between differing labels are interpolated (elsewhere every candidate is one label, the nearest
    one), so the cost follows the organs' surfaces, not the volume, and no C-channel array of the output's size is
    built. Keeping to the neighbours' labels means a component that postprocessing removed from `labels` cannot
    come back from its scores."""
    mixed = _mixed_cells(labels)
    z, y, x = (_linear_weights(n, int(m)) for n, m in zip(labels.shape, out_shape))
    flat_scores, flat_labels = scores.reshape(scores.shape[0], -1), labels.reshape(-1)
    plane = labels.shape[1] * labels.shape[2]
    for start, slab in resize_nearest_slabs(labels, out_shape, slices_per_slab):
        rows_here = z[0][start:start + slab.shape[0]]
        at = np.nonzero(np.take(np.take(np.take(mixed, rows_here, axis=0), y[0], axis=1), x[0], axis=2))
        if at[0].size == 0:
            yield start, slab
            continue
        # the 8 voxels each output voxel interpolates between, as flat indices, and their weights
        corners = [((i0[o] * step, 1 - w[o]), (i1[o] * step, w[o])) for (i0, i1, w), o, step in
                   zip((z, y, x), (at[0] + start, at[1], at[2]), (plane, labels.shape[2], 1))]
        best = np.zeros((scores.shape[0], at[0].size), dtype=np.float32)
        candidate = np.zeros(best.shape, dtype=bool)
        columns = np.arange(at[0].size)
        for (iz, wz), (iy, wy), (ix, wx) in itertools.product(*corners):
            flat = iz + iy + ix
            best += np.take(flat_scores, flat, axis=1) * (wz * wy * wx)
            candidate[np.take(flat_labels, flat), columns] = True
        best[~candidate] = -np.inf
        slab[at] = best.argmax(axis=0)
        yield start, slab


def resize_offset_and_scale(start: Sequence[int], n_in: Sequence[int], n_out: Sequence[int]
                            ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Offset and scale (array order) of a grid made by resizing the region start..start+n_in to n_out voxels."""
    scale = tuple(a / b for a, b in zip(n_in, n_out))
    offset = tuple(s0 + (k - 1) / 2 for s0, k in zip(start, scale))
    return offset, scale
