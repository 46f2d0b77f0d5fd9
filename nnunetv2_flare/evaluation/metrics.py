"""FLARE's per-organ Dice (DSC) and normalized surface Dice (NSD), in physical space.

The rules (../shared/docs/method.md, FLARE's public evaluation script):
- organ absent in both reference and prediction: DSC = NSD = 1; absent in only one of them: DSC = NSD = 0;
- aorta, IVC and esophagus (`Z_RANGE_RESTRICTED`) are scored only on the slices from the first to the last slice
  where the reference labels them (both masks are cut to that slab before DSC and NSD);
- NSD uses a per-organ tolerance in mm (`NSD_TOLERANCE_MM`) and is set to 0 where DSC < 0.1;
- case score = mean over organs, dataset score = mean over cases.

NSD counts surface voxels: (|S_ref within tol of S_pred| + |S_pred within tol of S_ref|) / (|S_ref| + |S_pred|).
A surface voxel is a foreground voxel with a background 6-neighbour (the array border counts as background), and
distances are Euclidean in mm between voxel centres, using the reference's spacing.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from nnunetv2_flare.labels import FLARE_ORGANS, NSD_TOLERANCE_MM, Z_RANGE_RESTRICTED

NSD_DSC_THRESHOLD = 0.1
# distances that equal the tolerance exactly (e.g. 10 x 0.7 mm = 7 mm) count as within it, whatever the rounding
DISTANCE_EPSILON_MM = 1e-6
_SIX_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


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


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=_SIX_NEIGHBOURS, border_value=0)


def _tight_bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    coords = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
              for axis in range(mask.ndim)]
    return tuple(slice(int(c[0]), int(c[-1]) + 1) for c in coords)


def normalized_surface_dice(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float],
                            tolerance_mm: float) -> float:
    """Symmetric surface-voxel NSD of two non-empty boolean masks on the same grid (spacing in array axis order)."""
    # everything outside the union's tight box is background for both masks, so surfaces and surface-to-surface
    # distances computed inside the box are exact, and much cheaper than on the whole volume
    box = _tight_bounding_box(ref | pred)
    ref, pred = ref[box], pred[box]
    surface_ref, surface_pred = surface_voxels(ref), surface_voxels(pred)
    distance_to_ref = ndimage.distance_transform_edt(~surface_ref, sampling=spacing)
    distance_to_pred = ndimage.distance_transform_edt(~surface_pred, sampling=spacing)
    limit = tolerance_mm + DISTANCE_EPSILON_MM
    close_ref = int((distance_to_pred[surface_ref] <= limit).sum())
    close_pred = int((distance_to_ref[surface_pred] <= limit).sum())
    return (close_ref + close_pred) / (int(surface_ref.sum()) + int(surface_pred.sum()))


def _slab_of_reference(ref: np.ndarray, slice_axis: int) -> tuple[slice, ...]:
    other_axes = tuple(a for a in range(ref.ndim) if a != slice_axis)
    labelled = np.flatnonzero(ref.any(axis=other_axes))
    index: list[slice] = [slice(None)] * ref.ndim
    index[slice_axis] = slice(int(labelled[0]), int(labelled[-1]) + 1)
    return tuple(index)


def evaluate_organ(ref: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float,
                   restrict_to_reference_slices: bool = False, slice_axis: int = 0) -> tuple[float, float]:
    """(DSC, NSD) of one organ given as boolean masks."""
    in_ref, in_pred = bool(ref.any()), bool(pred.any())
    if not in_ref and not in_pred:
        return 1.0, 1.0
    if not (in_ref and in_pred):
        return 0.0, 0.0
    if restrict_to_reference_slices:
        slab = _slab_of_reference(ref, slice_axis)
        ref, pred = ref[slab], pred[slab]
        if not pred.any():
            return 0.0, 0.0
    dsc = dice(ref, pred)
    if dsc < NSD_DSC_THRESHOLD:
        return dsc, 0.0
    return dsc, normalized_surface_dice(ref, pred, spacing, tolerance_mm)


def evaluate_case(ref_arr: np.ndarray, pred_arr: np.ndarray, spacing: Sequence[float],
                  labels: Iterable[int] | None = None, slice_axis: int = 0) -> dict:
    """FLARE scores of one case.

    `ref_arr`, `pred_arr`: integer label maps on the same grid; `spacing`: the reference's voxel size in mm in array
    axis order (for arrays from SimpleITK: `image.GetSpacing()[::-1]`); `slice_axis`: the array axis along the
    patient's superior-inferior direction (axis 0 for a SimpleITK array of an axial scan).
    Returns {"DSC": {label: value}, "NSD": {label: value}, "mean_DSC": ..., "mean_NSD": ...}.
    """
    if ref_arr.shape != pred_arr.shape:
        raise ValueError(f"reference shape {ref_arr.shape} != prediction shape {pred_arr.shape}: the prediction must "
                         "be on the reference's grid (nnUNetv2_flare_predict writes it on the input's grid)")
    if len(spacing) != ref_arr.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {ref_arr.ndim}-d array")
    labels = sorted(FLARE_ORGANS) if labels is None else [int(l) for l in labels]
    unknown = [l for l in labels if l not in NSD_TOLERANCE_MM]
    if unknown:
        raise ValueError(f"labels {unknown} are not FLARE organs; choose from {sorted(FLARE_ORGANS)}")
    spacing = tuple(float(s) for s in spacing)
    dscs, nsds = {}, {}
    for label in labels:
        dscs[label], nsds[label] = evaluate_organ(
            ref_arr == label, pred_arr == label, spacing, NSD_TOLERANCE_MM[label],
            restrict_to_reference_slices=label in Z_RANGE_RESTRICTED, slice_axis=slice_axis)
    return {"DSC": dscs, "NSD": nsds,
            "mean_DSC": float(np.mean(list(dscs.values()))), "mean_NSD": float(np.mean(list(nsds.values())))}
