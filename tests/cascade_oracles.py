"""Test helpers for the cascade: oracle "networks" that answer with a reference label, the expected output of an
ideal pipeline computed independently with SimpleITK, Dice, real-data access and synthetic volumes."""
from __future__ import annotations

from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.inference.core.settings import CascadeSettings
from nnunetv2_flare.inference.geometry import VoxelGrid
from nnunetv2_flare.inference.predictor import FlareCascadePredictor

SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared from the repository root
REAL_DATA = SHARED / "data" / "real"
# tiny random-weight cascades (random_models.write_random_cascade): fast to build, run and convert
SMALL_CASCADE = dict(locator_size=(64, 64, 64), organ_patch_size=(32, 32, 32), organ_spacing=(4.0, 3.0, 3.0))
IRCADB_TO_FLARE = {449: 1, 451: 1, 453: 1, 465: 1, 481: 1, 193: 2, 385: 3, 513: 5, 33: 6, 129: 13}


def real_data(relative: str) -> Path:
    path = REAL_DATA / relative
    if not path.exists():
        raise FileNotFoundError(f"Real test data missing: {path}. The tests expect the shared data folder "
                                f"'shared/data/real/' next to the repository (../shared/data/real from the repo root).")
    return path


class LabelOracle:
    """Returns the labels of a reference resampled (nearest neighbour, physical space) onto the grid it is asked
    about. `binary`: background / foreground, as the locator predicts."""

    def __init__(self, reference: sitk.Image, binary: bool = False) -> None:
        self.reference = sitk.Cast(reference, sitk.sitkUInt8)
        self.binary = binary
        self.grids: list[VoxelGrid] = []

    def __call__(self, x: np.ndarray, grid: VoxelGrid) -> np.ndarray:
        self.grids.append(grid)
        labels = sitk.GetArrayFromImage(grid.resample(self.reference))
        assert labels.shape == tuple(x.shape[2:]), (labels.shape, x.shape)
        return (labels > 0).astype(np.uint8) if self.binary else labels


class ScoresOracle:
    """A perfectly calibrated organ network: the class scores of a grid are each class's mask of the reference
    resampled linearly (physical space) onto it; its labels are their argmax."""

    def __init__(self, reference: sitk.Image, num_classes: int = 14) -> None:
        self.masks = [sitk.Cast(reference == c, sitk.sitkFloat32) for c in range(num_classes)]

    def scores(self, x: np.ndarray, grid: VoxelGrid) -> np.ndarray:
        return np.stack([sitk.GetArrayFromImage(grid.resample(m, sitk.sitkLinear)) for m in self.masks])

    def __call__(self, x: np.ndarray, grid: VoxelGrid) -> np.ndarray:
        return self.scores(x, grid).argmax(axis=0).astype(np.uint8)


def map_labels(image: sitk.Image, mapping: dict[int, int]) -> sitk.Image:
    a = sitk.GetArrayViewFromImage(image)
    out = np.zeros(a.shape, np.uint8)
    for code, flare in mapping.items():
        out[a == code] = flare
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(image)
    return result


def ircadb_case() -> tuple[Path, sitk.Image]:
    image = real_data("3dircadb/3Dircadb1.1_PATIENT_DICOM.nii.gz")
    labels = sitk.ReadImage(str(real_data("3dircadb/3Dircadb0101Labeled.nii.gz")))
    return image, map_labels(labels, IRCADB_TO_FLARE)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


def largest_component_per_label(labels: np.ndarray) -> np.ndarray:
    out = np.zeros_like(labels)
    for value in np.unique(labels):
        if value:
            out[cc3d.largest_k(labels == value, k=1, connectivity=26) > 0] = value
    return out


def ideal_output(reference: sitk.Image, box_start_xyz, box_stop_xyz, target_spacing_xyz,
                 nudge: float = 0.0) -> np.ndarray:
    """What a geometrically exact cascade gives with perfect networks: the reference inside the crop, resampled
    to the organ spacing (same extent, nearest neighbour), largest component per organ, resampled back.
    Written with SimpleITK's physical-space resampling only (independent of the predictor's index arithmetic).
    `nudge` shifts the working grid by that fraction of a working voxel: where an original voxel centre lies exactly
    between two working voxels, nearest neighbour is a tie that rounding error decides; nudging both ways gives
    both valid answers."""
    crop = reference[tuple(slice(a, b) for a, b in zip(box_start_xyz, box_stop_xyz))]
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(crop.GetSize(), crop.GetSpacing(), target_spacing_xyz)]
    spacing = [n * s / m for n, s, m in zip(crop.GetSize(), crop.GetSpacing(), size)]
    # same physical extent: the first working voxel's centre sits half a working voxel inside the crop's edge
    first = crop.TransformContinuousIndexToPhysicalPoint(
        [(w / s - 1) / 2 + nudge * w / s for w, s in zip(spacing, crop.GetSpacing())])
    low = sitk.Resample(crop, size, sitk.Transform(), sitk.sitkNearestNeighbor, first, spacing, crop.GetDirection())
    low_array = largest_component_per_label(sitk.GetArrayFromImage(low))
    low_filtered = sitk.GetImageFromArray(low_array)
    low_filtered.CopyInformation(low)
    back = sitk.GetArrayFromImage(sitk.Resample(low_filtered, crop, sitk.Transform(), sitk.sitkNearestNeighbor))
    out = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    out[tuple(slice(a, b) for a, b in zip(box_start_xyz[::-1], box_stop_xyz[::-1]))] = back
    return out


def tie_tolerant_ideal(output: np.ndarray, reference: sitk.Image, box_start_xyz, box_stop_xyz,
                       target_spacing_xyz) -> np.ndarray:
    """The ideal output, taking the output's value wherever a nearest-neighbour tie makes both values valid."""
    ideal = ideal_output(reference, box_start_xyz, box_stop_xyz, target_spacing_xyz)
    for nudge in (-1e-4, 1e-4):
        other = ideal_output(reference, box_start_xyz, box_stop_xyz, target_spacing_xyz, nudge)
        ideal = np.where(output == other, output, ideal)
    return ideal


def synthetic_case(size_xyz=(48, 40, 24), spacing=(0.9, 1.3, 3.5), direction=None, origin=(-20.0, 35.0, 100.0),
                   seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """A CT-like volume (HU) with asymmetric ellipsoid 'organs' and its label image, same (arbitrary) geometry."""
    rng = np.random.default_rng(seed)
    shape = size_xyz[::-1]
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    labels = np.zeros(shape, np.uint8)
    organs = [(1, (0.1, -0.3, 0.3), (0.5, 0.35, 0.3)), (3, (0.0, 0.35, -0.45), (0.4, 0.2, 0.25)),
              (2, (-0.3, 0.3, 0.45), (0.3, 0.12, 0.15)), (13, (-0.35, -0.25, -0.5), (0.25, 0.12, 0.12)),
              (5, (0.0, 0.0, 0.0), (0.8, 0.08, 0.08)), (11, (0.45, 0.25, 0.0), (0.2, 0.25, 0.2))]
    for label, (cz, cy, cx), (rz, ry, rx) in organs:
        inside = ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
        labels[inside] = label
    ct = np.where(labels > 0, 60 + 10 * labels, -900).astype(np.float32) + rng.normal(0, 10, shape)
    image = sitk.GetImageFromArray(ct.astype(np.int16))
    label_image = sitk.GetImageFromArray(labels)
    for im in (image, label_image):
        im.SetSpacing(spacing)
        im.SetOrigin(origin)
        if direction is not None:
            im.SetDirection(direction)
    return image, label_image


def rotation_direction(ax: float, az: float, flip_y: bool = True) -> tuple[float, ...]:
    """An oblique, partly flipped direction matrix (not a permutation)."""
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    m = rz @ rx @ np.diag([1, -1 if flip_y else 1, 1])
    return tuple(float(v) for v in m.ravel())


NETWORK_KEYWORDS = ("locator_size", "organ_patch_size", "organ_spacing", "device")


def predictor_from_networks(locator, organs, locator_normalization, organ_normalization,
                            **options) -> FlareCascadePredictor:
    """`FlareCascadePredictor.from_networks` with the networks' sizes and spacing as keywords and every other keyword
    a `CascadeSettings` field."""
    networks = {k: options.pop(k) for k in NETWORK_KEYWORDS if k in options}
    return FlareCascadePredictor.from_networks(locator, organs, locator_normalization, organ_normalization,
                                               **networks, settings=CascadeSettings(**options))
