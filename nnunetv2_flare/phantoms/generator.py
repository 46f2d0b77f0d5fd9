"""Synthetic abdominal CT phantoms with the 13 FLARE organ labels.

`make_phantom(seed)` returns a SimpleITK image (int16 HU) and its label map (uint8, same grid). The patient is
painted as tissue ids on a coarse grid (about 1.8 x 1.8 x 2.5 mm) in the anatomy frame, turned into HU with a
per-case contrast phase and texture, blurred like a reconstruction kernel, upsampled to the scan grid with linear
interpolation (labels: nearest), given noise, and stored with the scan's header (flips included: the array is
flipped with the direction cosines, so the patient is the same in physical space).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_flare.phantoms.anatomy import _CAVITY_LEVELS, Body, paint_patient
from nnunetv2_flare.phantoms.painter import Grid, Painter
from nnunetv2_flare.phantoms.scan import SHAPES, Scan
from nnunetv2_flare.phantoms.tissues import PHASE_PROBABILITIES, PHASES, T, randomise_tissue_table, sample_tissue_table

HU_MIN, HU_MAX = -1024, 3071
TEXTURE_MM = 6.0
SHADING_HU, SHADING_MM = 40.0, 120.0


@dataclass(frozen=True)
class Randomisation:
    """How often a phantom departs from the realistic ones, for training sets: `truncated_fov`, the probability that
    the field of view cuts the patient's flanks (`Scan.truncated`); `synthetic_contrast`, the probability that every
    soft tissue gets a random CT number and the image a slow shading (`tissues.randomise_tissue_table`)."""
    truncated_fov: float = 0.0
    synthetic_contrast: float = 0.0

    def __post_init__(self) -> None:
        for name in ("truncated_fov", "synthetic_contrast"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")


@dataclass
class Phantom:
    image: np.ndarray   # int16 (z, y, x) as stored (after header flips)
    label: np.ndarray   # uint8, same grid
    spacing: tuple[float, float, float]    # (x, y, z) as SimpleITK
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    info: dict = field(default_factory=dict)

    def to_sitk(self) -> tuple[sitk.Image, sitk.Image]:
        images = []
        for array in (self.image, self.label):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(self.spacing)
            image.SetOrigin(self.origin)
            image.SetDirection(self.direction)
            images.append(image)
        return images[0], images[1]


def _interpolate_axis(array: np.ndarray, axis: int, coordinates: np.ndarray) -> np.ndarray:
    """Linear interpolation of `array` along `axis` at continuous indices `coordinates` (clamped at the ends)."""
    n = array.shape[axis]
    coordinates = np.clip(coordinates, 0, n - 1)
    lower = np.floor(coordinates).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    shape = [1] * array.ndim
    shape[axis] = -1
    weight = (coordinates - lower).astype(np.float32).reshape(shape)
    low = np.take(array, lower, axis=axis)
    return low + (np.take(array, upper, axis=axis) - low) * weight


def _fine_to_coarse(n_fine: int, factor: int) -> np.ndarray:
    """Continuous coarse index of each fine voxel (coarse voxel m is the centre of fine voxels m*f .. m*f+f-1)."""
    return (np.arange(n_fine) - (factor - 1) / 2) / factor


def _upsample_linear_axis(array: np.ndarray, axis: int, factor: int, n_fine: int) -> np.ndarray:
    """Linear upsampling by an integer factor; coarse voxel m is the centre of fine voxels m*f .. m*f+f-1.

    Written as f strided slices instead of a gather: fine voxel m*f+j lies at coarse position m + d_j, between
    coarse voxels m and m-1 (d_j < 0) or m and m+1 (d_j > 0), with the edge voxel repeated at the ends."""
    def along(index) -> tuple:
        return tuple(index if a == axis else slice(None) for a in range(array.ndim))

    # differences to the previous and the following coarse voxel (edge voxels repeated)
    backward = np.concatenate([array[along(slice(0, 1))], array[along(slice(0, -1))]], axis=axis) - array
    forward = np.concatenate([array[along(slice(1, None))], array[along(slice(-1, None))]], axis=axis) - array
    shape = list(array.shape)
    shape[axis] *= factor
    out = np.empty(shape, np.float32)
    for j in range(factor):
        d = (j - (factor - 1) / 2) / factor
        target = out[along(slice(j, None, factor))]
        np.multiply(backward if d < 0 else forward, np.float32(abs(d)), out=target)
        target += array
    return out[along(slice(0, n_fine))]


def _upsample(array: np.ndarray, fine_zyx: tuple[int, ...], factors_zyx: np.ndarray, linear: bool) -> np.ndarray:
    for axis in range(3):
        factor = int(factors_zyx[axis])
        if factor == 1:
            continue
        if linear:
            array = _upsample_linear_axis(array, axis, factor, fine_zyx[axis])
        else:  # nearest: every fine voxel of a block is closer to its own coarse centre than to a neighbour's
            array = np.take(np.repeat(array, factor, axis=axis), np.arange(fine_zyx[axis]), axis=axis)
    return array


def _gaussian_noise_gain(sigma: float) -> float:
    """Factor by which scipy's 1-d Gaussian filter of width `sigma` scales the standard deviation of white noise."""
    if sigma <= 0:
        return 1.0
    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    return float(np.sqrt((kernel ** 2).sum()))


def _smooth_noise(rng: np.random.Generator, shape_zyx: tuple[int, ...], spacing_zyx: np.ndarray,
                  feature_mm: float) -> np.ndarray:
    """Unit-variance noise with features of about `feature_mm`, on the given grid."""
    step = np.maximum(1.0, feature_mm / spacing_zyx)
    low_shape = tuple(int(np.ceil(n / s)) + 2 for n, s in zip(shape_zyx, step))
    low = ndimage.gaussian_filter(rng.standard_normal(low_shape, dtype=np.float32), 0.7)
    low /= max(float(low.std()), 1e-6)
    for axis in range(3):
        low = _interpolate_axis(low, axis, np.arange(shape_zyx[axis]) / step[axis] + 0.5)
    return low


def make_phantom_arrays(seed: int | np.random.SeedSequence, scale: float | str = 1.0, fov: str | None = None,
                        flips: tuple[bool, bool, bool] | None = None,
                        randomisation: Randomisation | None = None) -> Phantom:
    """One phantom as arrays plus header. `scale`: 1.0 or "full" = clinical 512 x 512 grids, "half", "small"
    (0.25: 128 x 128, voxels 4x larger per axis) or "tiny" (0.125), or any factor. `fov`: one of
    `scan.FOVS` ("upper_abdomen", "abdomen", "abdomen_pelvis", "chest_abdomen_pelvis"); random if None.
    `flips`: (x, y, z) header flips; random if None. `randomisation`: how often the field of view is truncated and
    the contrast synthetic (default: neither). Same seed, scale and fov: the same patient and voxels whatever
    `flips`; the randomisation has its own random stream, so without it a seed gives the phantom it always gave."""
    if isinstance(scale, str):
        if scale not in SHAPES:
            raise ValueError(f"unknown shape '{scale}'; choose from {list(SHAPES)} or give a number")
        scale = SHAPES[scale]
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    seeds = (seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))).spawn(5)
    body_rng, scan_rng, anatomy_rng, intensity_rng, randomisation_rng = (np.random.default_rng(s) for s in seeds)
    randomisation = randomisation or Randomisation()
    truncate = randomisation_rng.random() < randomisation.truncated_fov
    synthetic = randomisation_rng.random() < randomisation.synthetic_contrast

    body = Body.sample(body_rng)
    half_width = float(_CAVITY_LEVELS[:, 1].max()) * body.scale[0] + body.muscle_mm + body.fat_mm
    scan = Scan.sample(scan_rng, half_width, float(body.scale[2]), scale, fov, flips)
    if truncate:
        scan = scan.truncated(randomisation_rng, half_width)

    factors = scan.coarse_factors()
    coarse_size = -(-scan.size // factors)  # ceil
    coarse_spacing = scan.spacing * factors
    grid = Grid(origin=scan.first_voxel + (factors - 1) / 2 * scan.spacing, spacing=coarse_spacing,
                shape_zyx=tuple(int(n) for n in coarse_size[::-1]))
    painter = Painter(grid)
    paint_patient(painter, body, anatomy_rng)

    # intensities on the coarse grid
    rng = intensity_rng
    phase = PHASES[rng.choice(len(PHASES), p=PHASE_PROBABILITIES)]
    mean, amplitude = sample_tissue_table(rng, phase)
    if phase == "arterial":
        amplitude[T.SPLEEN] *= 3  # the arterial-phase spleen is mottled
    if synthetic:
        randomise_tissue_table(randomisation_rng, mean, amplitude)
    coarse_spacing_zyx = coarse_spacing[::-1]
    texture = _smooth_noise(rng, grid.shape_zyx, coarse_spacing_zyx, TEXTURE_MM)
    image = mean[painter.tissue] + amplitude[painter.tissue] * texture
    del texture
    if synthetic:  # a slowly varying offset across the patient (SynthSeg's bias field; CT's beam hardening)
        image += np.float32(randomisation_rng.uniform(0, SHADING_HU)) * _smooth_noise(
            randomisation_rng, grid.shape_zyx, coarse_spacing_zyx, SHADING_MM)
    # reconstruction: quantum noise on the coarse grid, then the kernel's blur (in-plane) and slice profile (z)
    # smooth it into correlated CT noise; one filter pass does both
    kernel_mm = rng.uniform(0.5, 1.2)
    sigma = np.maximum(np.array([0.45 * scan.spacing[2], kernel_mm, kernel_mm]) / coarse_spacing_zyx, 0.5)
    noise_sd = float(np.clip(rng.uniform(7, 28) * np.sqrt(2.5 / scan.spacing[2]), 5, 60))
    gain = float(np.prod([_gaussian_noise_gain(s) for s in sigma]))
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(0.8 * noise_sd / gain)
    image = ndimage.gaussian_filter(image, sigma, mode="nearest")

    # to the scan grid
    fine_zyx = tuple(int(n) for n in scan.size[::-1])
    factors_zyx = factors[::-1]
    image = _upsample(image, fine_zyx, factors_zyx, linear=True)
    image += rng.standard_normal(fine_zyx, dtype=np.float32) * np.float32(0.5 * noise_sd)
    label = _upsample(painter.label, fine_zyx, factors_zyx, linear=False)
    floor = HU_MIN
    if scan.circle_padding is not None:
        yy = (np.arange(fine_zyx[1]) - (fine_zyx[1] - 1) / 2)[:, None]
        xx = (np.arange(fine_zyx[2]) - (fine_zyx[2] - 1) / 2)[None, :]
        outside = (xx ** 2 + yy ** 2) > (min(fine_zyx[1:]) / 2) ** 2
        image[:, outside] = scan.circle_padding
        label[:, outside] = 0
        floor = min(HU_MIN, scan.circle_padding)
    np.clip(image, floor, HU_MAX, out=image)
    image = np.rint(image).astype(np.int16)

    flip_index = tuple(slice(None, None, -1) if f else slice(None) for f in scan.flips[::-1])
    spacing, origin, direction = scan.header()
    info = {"fov": scan.fov, "phase": phase, "flips_xyz": list(scan.flips), "noise_sd": round(noise_sd, 2),
            "kernel_mm": round(float(kernel_mm), 3), "coarse_factors_xyz": factors.tolist(),
            "body_scale_xyz": np.round(body.scale, 4).tolist(), "fat_mm": round(body.fat_mm, 2),
            "circle_padding": scan.circle_padding, "truncated_fov": bool(truncate),
            "synthetic_contrast": bool(synthetic)}
    return Phantom(np.ascontiguousarray(image[flip_index]), np.ascontiguousarray(label[flip_index]),
                   spacing, origin, direction, info)


def make_phantom(seed: int | np.random.SeedSequence, scale: float | str = 1.0, fov: str | None = None,
                 flips: tuple[bool, bool, bool] | None = None,
                 randomisation: Randomisation | None = None) -> tuple[sitk.Image, sitk.Image]:
    """(CT image, label map) of one phantom as SimpleITK images; see `make_phantom_arrays`."""
    return make_phantom_arrays(seed, scale, fov, flips, randomisation).to_sitk()
