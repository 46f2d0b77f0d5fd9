"""Process every scan in one canonical voxel orientation and map the labels back exactly.

The networks see arrays, so a scan stored with flipped or permuted axes would look like a different body to them.
The cascade therefore permutes and flips the array (no resampling, no interpolation) into the canonical orientation
before it does anything else and undoes exactly that afterwards: the result is voxel for voxel the result of the
axis-aligned scan. Oblique scans (direction cosines not along the axes) are processed in the nearest axis-aligned
orientation, again without resampling: resampling would blur the CT and need a second interpolation of the labels
back onto the input grid, while the networks tolerate the few degrees of tilt that real oblique acquisitions have.

Orientation codes follow ITK / DICOM: each letter names the direction an index axis points to, in x, y, z index order.
"LPS" is SimpleITK's identity direction (the usual axial DICOM CT); "RAS" is diag(-1, -1, 1).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

DEFAULT_ORIENTATION = "LPS"  # for models whose plans keep each file's own orientation (SimpleITKIO)


def models_orientation(*trained_in: str | None) -> str:
    """The one orientation a set of models was trained in (None: their reader kept each file's own, so any
    orientation is as good: DEFAULT_ORIENTATION). Models trained in different orientations cannot share an input."""
    fixed = {o for o in trained_in if o is not None}
    if len(fixed) > 1:
        raise ValueError(f"the models were trained in different voxel orientations ({', '.join(sorted(fixed))}): "
                         f"their plans name different image readers; pass --orientation to choose one")
    return fixed.pop() if fixed else DEFAULT_ORIENTATION


_LETTER_AXIS = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def orientation_matrix(code: str) -> np.ndarray:
    """3 x 3 direction matrix (columns: index axes x, y, z) of an orientation code such as "LPS" or "RAI"."""
    code = code.upper()
    if len(code) != 3 or any(c not in _LETTER_AXIS for c in code) or \
            len({_LETTER_AXIS[c][0] for c in code}) != 3:
        raise ValueError(f"orientation {code!r}: give three letters, one of L/R, one of P/A, one of S/I (e.g. LPS).")
    m = np.zeros((3, 3))
    for column, letter in enumerate(code):
        axis, sign = _LETTER_AXIS[letter]
        m[axis, column] = sign
    return m


def direction_matrix(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)


def orientation_code(direction: np.ndarray) -> str:
    """The nearest orientation code of a direction matrix (dominant physical axis of each index axis)."""
    letters = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}
    perm, signs = _best_signed_permutation(np.eye(3), direction)
    # index axis perm[j] runs along physical axis j with sign signs[j]
    code = [""] * 3
    for physical_axis, (index_axis, sign) in enumerate(zip(perm, signs)):
        code[index_axis] = letters[(physical_axis, int(sign))]
    return "".join(code)


def _best_signed_permutation(target: np.ndarray, direction: np.ndarray) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """perm, signs with signs[j] * direction[:, perm[j]] closest to target[:, j] (max total |cosine|)."""
    dots = target.T @ direction  # dots[j, i] = cos(target axis j, index axis i)
    perm = max(itertools.permutations(range(3)), key=lambda p: sum(abs(dots[j, p[j]]) for j in range(3)))
    signs = tuple(1.0 if dots[j, perm[j]] >= 0 else -1.0 for j in range(3))
    return tuple(perm), signs


@dataclass(frozen=True)
class Reorientation:
    """New index axis j (x, y, z order) is old index axis `perm[j]`, reversed where `signs[j] < 0`."""
    perm: tuple[int, int, int]
    signs: tuple[float, float, float]
    source_code: str
    target_code: str
    oblique_degrees: float

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and all(s > 0 for s in self.signs)

    # array order is (z, y, x): array axis a is index axis 2 - a
    def _array_axes(self) -> tuple[int, ...]:
        return tuple(2 - self.perm[2 - a] for a in range(3))

    def _flipped_array_axes(self) -> tuple[int, ...]:
        return tuple(a for a in range(3) if self.signs[2 - a] < 0)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """A view (no copy) of a (z, y, x) array in the canonical orientation."""
        return np.flip(np.transpose(array, self._array_axes()), self._flipped_array_axes())

    def box_to_original(self, start: Sequence[int], stop: Sequence[int],
                        canonical_shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """A half-open (z, y, x) box of the canonical array as the same voxels' box in the original array."""
        axes, flipped = self._array_axes(), self._flipped_array_axes()
        o_start, o_stop = [0] * 3, [0] * 3
        for a in range(3):
            s, e = int(start[a]), int(stop[a])
            if a in flipped:
                s, e = canonical_shape[a] - e, canonical_shape[a] - s
            o_start[axes[a]], o_stop[axes[a]] = s, e
        return tuple(o_start), tuple(o_stop)

    def values_to_original(self, values_zyx: Sequence) -> tuple:
        """Per-axis values (array order) of the canonical array, listed for the original array's axes."""
        out = [None] * 3
        for a, source in enumerate(self._array_axes()):
            out[source] = values_zyx[a]
        return tuple(out)

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """Inverse of `to_canonical` (a view)."""
        inverse = np.argsort(self._array_axes())
        return np.transpose(np.flip(array, self._flipped_array_axes()), inverse)


def plan_reorientation(image: sitk.Image, target: str = DEFAULT_ORIENTATION) -> Reorientation:
    direction = direction_matrix(image)
    goal = orientation_matrix(target)
    perm, signs = _best_signed_permutation(goal, direction)
    cosines = [float(np.clip(signs[j] * goal[:, j] @ direction[:, perm[j]], -1, 1)) for j in range(3)]
    oblique = max(math.degrees(math.acos(c)) for c in cosines)
    return Reorientation(perm, signs, orientation_code(direction), target.upper(), oblique)


SLAB = 16  # slices copied at a time by reoriented_image


def reoriented_image(image: sitk.Image, reorientation: Reorientation) -> sitk.Image:
    """The image with its voxels permuted / flipped into the canonical orientation; physical space is unchanged."""
    if reorientation.is_identity:
        return image
    perm, signs = reorientation.perm, reorientation.signs
    size, spacing, direction = image.GetSize(), image.GetSpacing(), direction_matrix(image)
    array = reorientation.to_canonical(sitk.GetArrayViewFromImage(image))
    out = sitk.Image([int(n) for n in array.shape[::-1]], image.GetPixelID())
    for z in range(0, array.shape[0], SLAB):
        # copied into the new image a slab at a time (pasting reuses its buffer): a full-size contiguous copy first
        # would hold a huge scan three times (at 512 x 512 x 1500, int16: 2.4 GB)
        out[:, :, z:z + SLAB] = sitk.GetImageFromArray(np.ascontiguousarray(array[z:z + SLAB]))
    out.SetSpacing([spacing[perm[j]] for j in range(3)])
    new_direction = np.stack([signs[j] * direction[:, perm[j]] for j in range(3)], axis=1)
    out.SetDirection(tuple(float(v) for v in new_direction.ravel()))
    first = [0] * 3  # old index of the new first voxel
    for j in range(3):
        first[perm[j]] = 0 if signs[j] > 0 else size[perm[j]] - 1
    out.SetOrigin(image.TransformIndexToPhysicalPoint(first))
    return out


@dataclass(frozen=True)
class Geometry:
    """What a label image needs to sit on the input grid (kept instead of the input itself, which may be huge)."""
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image
