"""FLARE's per-organ Dice (DSC) and normalized surface Dice (NSD), as FLARE's official evaluation scores them.

Axis order: every array here is in FLARE's axis order, i.e. nibabel's (x, y, z): a SimpleITK array (z, y, x) is
transposed (`sitk_array.transpose(2, 1, 0)`) and the spacing is `image.GetSpacing()`. The order matters beyond the
slice axis: the corner-cell triangulation and the distance transform are not symmetric under axis permutations
to the last bit, and FLARE's numbers come from this order.

The rules (docs/evaluation.md, docs/method.md):
- organ absent in both reference and prediction: DSC = NSD = 1; absent in only one: DSC = NSD = 0 (decided on the
  whole volumes, before any slice cut);
- aorta, IVC and esophagus (`Z_RANGE_RESTRICTED`): both masks are cut to the reference's slice range along the third
  axis, `[first labelled slice, last labelled slice)` -- the last labelled slice is left out, as FLARE's script
  does. A reference labelled on a single slice (where FLARE's script crashes on an empty range) is scored on that
  one slice: our definition. A prediction empty inside the range scores DSC = 0 and so NSD = 0;
- NSD = 0 where DSC < 0.2 (`NSD_DSC_THRESHOLD`); otherwise NSD at the organ's tolerance (`NSD_TOLERANCE_MM`);
- case score = mean over organs.

The surface measure is the surface Dice of Nikolov et al. (2018, DeepMind's surface-distance method):
- surface elements sit on voxel corners. Each corner sees a 2x2x2 neighbourhood of voxels (8 bits, 256
  configurations); a corner whose neighbourhood is neither all background nor all foreground carries a surface
  element. Its area is that of the marching-cubes surface (Lorensen & Cline 1987, level 0.5) of the 2x2x2 cell,
  scaled to mm with the spacing. A configuration and its complement share one surface (Lorensen & Cline's
  complementary symmetry: the triangulation of the configuration with at most 4 foreground corners), which fixes
  how ambiguous cells are triangulated;
- the distance of a surface element is the Euclidean distance in mm from its corner to the nearest corner that
  carries a surface element of the other mask (exact distance transform on the corner grid);
- surface Dice at tolerance t = (area of reference elements at distance <= t + area of predicted elements at
  distance <= t) / (total reference area + total predicted area). No epsilon is added to t.
Both masks are cropped to the bounding box of their union first (the corner grid is that box plus one corner along
each axis), which gives the same distances as the whole volume at a fraction of the cost.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from nnunetv2_flare.labels import FLARE_ORGANS, NSD_TOLERANCE_MM, Z_RANGE_RESTRICTED
from nnunetv2_flare.masks import foreground_box

NSD_DSC_THRESHOLD = 0.2
SLICE_AXIS = 2  # FLARE cuts tubular organs along nibabel's third array axis, whatever the header direction
_CORNER_OFFSETS = tuple((a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1))  # bit 4a + 2b + c


def dice(ref: np.ndarray, pred: np.ndarray) -> float:
    denominator = int(ref.sum()) + int(pred.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.logical_and(ref, pred).sum()) / denominator


def foreground_agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(voxels with equal labels, voxels labelled in either) over the foreground of two label maps: how far two
    predictions of the same image agree, without a reference."""
    foreground = (a > 0) | (b > 0)
    return int((a[foreground] == b[foreground]).sum()), int(foreground.sum())


# --- surface elements -------------------------------------------------------------------------------------------

@functools.cache
def _cell_triangles() -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes triangles of all 256 corner-cell configurations, in voxel units.

    Returns (vertices (T, 3, 3) float64, configuration index (T,)). Configuration k has foreground at the cell
    corners (a, b, c) whose bit 4a + 2b + c is set in k.
    """
    from skimage.measure import marching_cubes  # scikit-image comes with nnunetv2; only needed once

    vertices, owners = [], []
    for code in range(1, 255):
        cell = np.array([(code >> (4 * a + 2 * b + c)) & 1 for a, b, c in _CORNER_OFFSETS], float).reshape(2, 2, 2)
        if cell.sum() > 4:  # complementary symmetry: the minority corners define the surface
            cell = 1.0 - cell
        verts, faces, _, _ = marching_cubes(cell, 0.5, method="lorensen")
        vertices.append(verts.astype(np.float64)[faces])
        owners.append(np.full(len(faces), code))
    return np.concatenate(vertices), np.concatenate(owners)


@functools.lru_cache(maxsize=64)
def surface_area_lookup(spacing: tuple[float, float, float]) -> np.ndarray:
    """Surface area in mm^2 of each of the 256 corner-cell configurations, for voxels of size `spacing` (mm)."""
    vertices, owners = _cell_triangles()
    vertices = vertices * np.asarray(spacing, np.float64)
    cross = np.cross(vertices[:, 1] - vertices[:, 0], vertices[:, 2] - vertices[:, 0])
    areas = 0.5 * np.linalg.norm(cross, axis=1)
    return np.bincount(owners, weights=areas, minlength=256)


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Configuration code (0..255) of every voxel corner of a 3-d boolean mask, shape `mask.shape + 1`.

    Corner i along an axis lies between voxels i - 1 and i; voxels outside the array are background.
    """
    padded = np.pad(mask.astype(np.uint8), 1)
    n0, n1, n2 = (s + 1 for s in mask.shape)
    codes = np.zeros((n0, n1, n2), np.uint8)
    for a, b, c in _CORNER_OFFSETS:
        codes |= padded[a:a + n0, b:b + n1, c:c + n2] << np.uint8(4 * a + 2 * b + c)
    return codes


@dataclass(frozen=True)
class SurfaceDistances:
    """Per surface element of each mask: its area (mm^2) and its distance (mm) to the other mask's surface."""
    distances_ref_to_pred: np.ndarray
    areas_ref: np.ndarray
    distances_pred_to_ref: np.ndarray
    areas_pred: np.ndarray


def distances_to_surface(surface: np.ndarray, points: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Euclidean distance in mm from each `points` position to the nearest `surface` position (same grid).

    The exact feature transform gives the nearest surface position; distances are then evaluated at the points only
    (a distance map of the whole grid costs as much again), in the same float64 operations as
    `scipy.ndimage.distance_transform_edt`, so a distance that equals a tolerance compares the same way.
    """
    nearest = ndimage.distance_transform_edt(~surface, sampling=spacing, return_distances=False,
                                             return_indices=True)
    where = np.nonzero(points)
    squared = np.zeros(len(where[0]), np.float64)
    for axis, step in enumerate(spacing):
        offset = (nearest[axis][where] - where[axis]).astype(np.float64) * step
        squared += offset * offset
    return np.sqrt(squared)


def surface_distances(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> SurfaceDistances:
    """Surface elements of two non-empty 3-d boolean masks on the same grid and their cross distances."""
    if ref.ndim != 3 or ref.shape != pred.shape:
        raise ValueError(f"need two 3-d masks of one shape, got {ref.shape} and {pred.shape}")
    if not (ref.any() and pred.any()):
        raise ValueError("surface distances need two non-empty masks")
    spacing = tuple(float(s) for s in spacing)
    # outside the union's box both masks are background: surfaces and the distances between them are unchanged
    lo, hi = foreground_box(ref | pred)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    codes_ref, codes_pred = neighbour_codes(ref[box]), neighbour_codes(pred[box])
    surface_ref = (codes_ref != 0) & (codes_ref != 255)
    surface_pred = (codes_pred != 0) & (codes_pred != 255)
    areas = surface_area_lookup(spacing)
    return SurfaceDistances(distances_ref_to_pred=distances_to_surface(surface_pred, surface_ref, spacing),
                            areas_ref=areas[codes_ref[surface_ref]],
                            distances_pred_to_ref=distances_to_surface(surface_ref, surface_pred, spacing),
                            areas_pred=areas[codes_pred[surface_pred]])


def surface_dice_at_tolerance(distances: SurfaceDistances, tolerance_mm: float) -> float:
    close = (distances.areas_ref[distances.distances_ref_to_pred <= tolerance_mm].sum()
             + distances.areas_pred[distances.distances_pred_to_ref <= tolerance_mm].sum())
    return float(close / (distances.areas_ref.sum() + distances.areas_pred.sum()))


def normalized_surface_dice(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                            tolerance_mm: float) -> float:
    """Surface Dice at `tolerance_mm` of two non-empty boolean masks (spacing in the arrays' axis order), without
    FLARE's per-organ rules."""
    return surface_dice_at_tolerance(surface_distances(ref, pred, spacing), tolerance_mm)


# --- FLARE's per-organ rules ------------------------------------------------------------------------------------

def reference_slice_range(ref: np.ndarray, slice_axis: int = SLICE_AXIS) -> slice:
    """FLARE's slice range of a tubular organ: [first, last) labelled slice of the (non-empty) reference along
    `slice_axis`; [first, first + 1) when it is labelled on one slice only (FLARE's script has no answer there)."""
    other_axes = tuple(a for a in range(ref.ndim) if a != slice_axis)
    labelled = np.flatnonzero(ref.any(axis=other_axes))
    first, last = int(labelled[0]), int(labelled[-1])
    return slice(first, max(last, first + 1))


def _cut(mask: np.ndarray, slices: slice, axis: int) -> np.ndarray:
    index: list[slice] = [slice(None)] * mask.ndim
    index[axis] = slices
    return mask[tuple(index)]


def evaluate_organ(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float,
                   restrict_to_reference_slices: bool = False, slice_axis: int = SLICE_AXIS) -> tuple[float, float]:
    """(DSC, NSD) of one organ given as boolean masks, with FLARE's rules (module docstring)."""
    in_ref, in_pred = bool(ref.any()), bool(pred.any())
    if not in_ref and not in_pred:
        return 1.0, 1.0
    if not (in_ref and in_pred):
        return 0.0, 0.0
    if restrict_to_reference_slices:
        slices = reference_slice_range(ref, slice_axis)
        ref, pred = _cut(ref, slices, slice_axis), _cut(pred, slices, slice_axis)
    dsc = dice(ref, pred)  # 0 when the prediction lies outside the range: then NSD = 0 below
    if dsc < NSD_DSC_THRESHOLD:
        return dsc, 0.0
    return dsc, normalized_surface_dice(ref, pred, spacing, tolerance_mm)


def _label_boxes(label_map: np.ndarray, labels: Sequence[int]) -> dict[int, tuple[slice, ...] | None]:
    """Bounding box of each label (None where absent), from one pass over the volume."""
    if not np.issubdtype(label_map.dtype, np.integer):
        label_map = label_map.astype(np.intp)
    objects = ndimage.find_objects(label_map, max_label=max(labels))
    return {label: objects[label - 1] for label in labels}


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    boxes = [box for box in (a, b) if box is not None]
    return tuple(slice(min(s[i].start for s in boxes), max(s[i].stop for s in boxes)) for i in range(3))


def evaluate_case(ref_arr: np.ndarray, pred_arr: np.ndarray, spacing: Sequence[float],
                  labels: Iterable[int] | None = None, slice_axis: int = SLICE_AXIS) -> dict:
    """FLARE scores of one case.

    `ref_arr`, `pred_arr`: integer label maps on the same grid, in FLARE's axis order (x, y, z; for a SimpleITK
    array `arr.transpose(2, 1, 0)`); `spacing`: the reference's voxel size in mm in that order
    (`image.GetSpacing()`); `slice_axis`: the axis of FLARE's slice range (2 in that order).
    Returns {"DSC": {label: value}, "NSD": {label: value}, "mean_DSC": ..., "mean_NSD": ...}, values unrounded.
    """
    if ref_arr.shape != pred_arr.shape:
        raise ValueError(f"reference shape {ref_arr.shape} != prediction shape {pred_arr.shape}: the prediction must "
                         "be on the reference's grid (nnUNetv2_flare_predict writes it on the input's grid)")
    if ref_arr.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"need 3-d label maps and 3 spacings, got shape {ref_arr.shape} and spacing {tuple(spacing)}")
    labels = sorted(FLARE_ORGANS) if labels is None else [int(label) for label in labels]
    unknown = [label for label in labels if label not in NSD_TOLERANCE_MM]
    if unknown:
        raise ValueError(f"labels {unknown} are not FLARE organs; choose from {sorted(FLARE_ORGANS)}")
    spacing = tuple(float(s) for s in spacing)
    # per organ, only its box is looked at: outside the union of both boxes both masks are background
    ref_boxes, pred_boxes = _label_boxes(ref_arr, labels), _label_boxes(pred_arr, labels)
    dscs, nsds = {}, {}
    for label in labels:
        if ref_boxes[label] is None and pred_boxes[label] is None:
            dscs[label], nsds[label] = 1.0, 1.0
            continue
        box = _union_box(ref_boxes[label], pred_boxes[label])
        dscs[label], nsds[label] = evaluate_organ(
            ref_arr[box] == label, pred_arr[box] == label, spacing, NSD_TOLERANCE_MM[label],
            restrict_to_reference_slices=label in Z_RANGE_RESTRICTED, slice_axis=slice_axis)
    return {"DSC": dscs, "NSD": nsds,
            "mean_DSC": float(np.mean(list(dscs.values()))), "mean_NSD": float(np.mean(list(nsds.values())))}
