"""What the Python API accepts as one CT, turned into a SimpleITK image, and the labels given back in the same kind.

- a path (file, DICOM series folder, one DICOM file) or a SimpleITK image: labels as a SimpleITK image;
- a nibabel image (Nifti1Image, Nifti2Image, ...): labels as a nibabel image with the same affine;
- a NumPy array in SimpleITK's array order (z, y, x), i.e. what `sitk.GetArrayFromImage` returns, with `spacing`
  (and optionally `origin`, `direction`) in SimpleITK's (x, y, z) order and LPS coordinates, as `SetSpacing` etc.
  take them: labels as a NumPy array of the same shape.
Anything else is refused with one line that lists what is accepted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.inference.inputs.nifti_transforms import set_affine

ACCEPTED = ("a path (image file, DICOM folder or file), a SimpleITK image, a nibabel image, or a NumPy array "
            "(z, y, x) with spacing=(x, y, z)")


@dataclass
class ApiInput:
    image: sitk.Image | None  # None: read from `path` by the predictor (its checks give file-specific errors)
    path: Path | None
    kind: str  # "path", "sitk", "nibabel", "numpy": how the labels go back
    original: Any = None


def _is_nibabel_image(obj: Any) -> bool:
    return type(obj).__module__.startswith("nibabel") and hasattr(obj, "affine") and hasattr(obj, "dataobj")


def image_from_nibabel(nii) -> sitk.Image:
    """Voxels (x, y, z) and the RAS affine -> a SimpleITK image (array z, y, x; LPS origin and direction)."""
    data = np.asanyarray(nii.dataobj)
    if data.ndim != 3:
        raise ValueError(f"the nibabel image has {data.ndim} dimensions; give one 3D CT.")
    return set_affine(sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0))), nii.affine)


def image_from_array(array: np.ndarray, spacing: Sequence[float] | None, origin: Sequence[float] | None = None,
                     direction: Sequence[float] | None = None) -> sitk.Image:
    if spacing is None:
        raise ValueError("a NumPy array needs spacing=(x, y, z) in mm (and optionally origin=, direction=): the "
                         "organ network works at a fixed physical resolution.")
    if array.ndim != 3:
        raise ValueError(f"the NumPy array has shape {array.shape}; give one 3D CT in (z, y, x) order.")
    if len(spacing) != 3 or (origin is not None and len(origin) != 3) or \
            (direction is not None and np.size(direction) != 9):
        raise ValueError("spacing and origin take 3 numbers (x, y, z), direction 9 (a row-major 3 x 3 matrix).")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing])
    if origin is not None:
        image.SetOrigin([float(v) for v in origin])
    if direction is not None:
        image.SetDirection([float(v) for v in np.ravel(direction)])
    return image


def as_api_input(obj: Any, spacing: Sequence[float] | None = None, origin: Sequence[float] | None = None,
                 direction: Sequence[float] | None = None) -> ApiInput:
    geometry_given = any(v is not None for v in (spacing, origin, direction))
    if isinstance(obj, np.ndarray):
        return ApiInput(image_from_array(obj, spacing, origin, direction), None, "numpy", obj)
    if geometry_given:
        raise ValueError("spacing / origin / direction go with a NumPy array only; other inputs carry their "
                         "geometry.")
    if isinstance(obj, sitk.Image):
        return ApiInput(obj, None, "sitk", obj)
    if isinstance(obj, (str, os.PathLike)):
        return ApiInput(None, Path(obj), "path", obj)
    if _is_nibabel_image(obj):
        return ApiInput(image_from_nibabel(obj), None, "nibabel", obj)
    raise TypeError(f"cannot predict a {type(obj).__name__}; give {ACCEPTED}.")


def labels_as(kind: str, labels: sitk.Image, original: Any = None):
    """The labels in the kind of the input: NumPy (z, y, x), nibabel (same affine and header), else SimpleITK."""
    if kind == "numpy":
        return sitk.GetArrayFromImage(labels)
    if kind == "nibabel":
        import nibabel as nib
        data = sitk.GetArrayFromImage(labels).transpose(2, 1, 0)
        out = nib.Nifti1Image(np.ascontiguousarray(data), original.affine)
        out.set_data_dtype(np.uint8)
        return out
    return labels
