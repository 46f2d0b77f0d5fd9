"""Scan geometry of a phantom: field of view, spacing, size, table position and header direction."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from nnunetv2_flare.inference.inputs.checks import MAX_SPACING_MM

# field of view along z in template mm (top, bottom ranges) and how often each occurs
FOVS: dict[str, tuple[tuple[float, float], tuple[float, float], float]] = {
    "upper_abdomen": ((185, 235), (-60, -20), 0.2),
    "abdomen": ((185, 245), (-140, -90), 0.35),
    "abdomen_pelvis": ((175, 235), (-330, -270), 0.3),
    "chest_abdomen_pelvis": ((400, 480), (-330, -270), 0.15),
}
SLICE_THICKNESSES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
# the smallest scale at which the thinnest slices stay within what nnUNetv2_flare_predict reads
MIN_SCALE = min(SLICE_THICKNESSES) / MAX_SPACING_MM
MIN_SLICES, MAX_SLICES = 40, 600
# header flips (x, y, z) as they occur in practice: DICOM-like LPS, NIfTI/RAS-like, and head-first stacks
FLIPS = (((False, False, False), 0.35), ((True, True, False), 0.3), ((False, False, True), 0.15),
         ((True, True, True), 0.1), ((True, False, False), 0.05), ((False, True, True), 0.05))
SHAPES = {"full": 1.0, "half": 0.5, "small": 0.25, "tiny": 0.125}


@dataclass(frozen=True)
class Scan:
    fov: str
    spacing: np.ndarray        # (x, y, z) mm
    size: np.ndarray           # (x, y, z) voxels
    first_voxel: np.ndarray    # anatomy-frame position of voxel (0, 0, 0) of the LPS-ordered array
    table_offset: np.ndarray   # physical position = anatomy position + table_offset
    flips: tuple[bool, bool, bool]
    circle_padding: float | None  # value outside the reconstruction circle (None: the whole square is image)

    @staticmethod
    def sample(rng: np.random.Generator, body_half_width: float, z_scale: float, scale: float = 1.0,
               fov: str | None = None, flips: tuple[bool, bool, bool] | None = None) -> "Scan":
        """`scale` < 1 makes proportionally fewer, larger voxels (same anatomy, for tests and CPU demos);
        `fov` and `flips` override the random choices (the random draws happen anyway, so nothing else changes)."""
        names = list(FOVS)
        random_fov = names[rng.choice(len(names), p=[FOVS[n][2] for n in names])]
        if fov is not None and fov not in FOVS:
            raise ValueError(f"unknown field of view '{fov}'; choose from {names}")
        fov = fov or random_fov
        (top_lo, top_hi), (bottom_lo, bottom_hi), _ = FOVS[fov]
        top, bottom = rng.uniform(top_lo, top_hi) * z_scale, rng.uniform(bottom_lo, bottom_hi) * z_scale
        extent = top - bottom
        # scaled-down grids make thicker slices: keep them within what nnUNetv2_flare_predict reads as a CT (on the
        # coarsest grids, even if the clinical scan would have had more or fewer slices than usual)
        thin_enough = [t for t in SLICE_THICKNESSES if t / scale <= MAX_SPACING_MM]
        if not thin_enough:
            raise ValueError(f"scale {scale:g} makes slices thicker than {MAX_SPACING_MM:g} mm, the most "
                             f"nnUNetv2_flare_predict reads; use a scale of at least {MIN_SCALE:g}")
        usable = [t for t in thin_enough if MIN_SLICES <= extent / t <= MAX_SLICES] or thin_enough
        thickness = float(rng.choice(usable))
        n_slices = int(round(extent / thickness))
        # the scanner's field of view fits the patient, within the 0.6-1.0 mm pixel range of clinical scans
        in_plane_fov = np.clip(2 * body_half_width + rng.uniform(20, 110), 0.6 * 512, 1.0 * 512)
        pixel = float(np.round(in_plane_fov / 512, 4))
        spacing = np.array([pixel, pixel, thickness]) / scale
        size = np.array([max(8, int(round(512 * scale))), max(8, int(round(512 * scale))),
                         max(4, int(round(n_slices * scale)))])
        width = size[:2] * spacing[:2]
        centre = np.array([rng.normal(0, 12), rng.normal(10, 12)])  # reconstruction centre, near the patient's
        first_voxel = np.array([centre[0] - width[0] / 2 + spacing[0] / 2, centre[1] - width[1] / 2 + spacing[1] / 2,
                                bottom])
        table_offset = np.array([rng.uniform(-30, 30), rng.uniform(-250, 50), rng.uniform(-1400, 200)]).round(1)
        random_flips = FLIPS[rng.choice(len(FLIPS), p=[f[1] for f in FLIPS])][0]
        flips = tuple(bool(f) for f in (random_flips if flips is None else flips))
        circle_padding = float(rng.choice([-2048.0, -3024.0, -1024.0])) if rng.random() < 0.4 else None
        return Scan(fov, spacing, size, first_voxel, table_offset, flips, circle_padding)

    def truncated(self, rng: np.random.Generator, body_half_width: float) -> "Scan":
        """The same scan with a field of view narrower than the patient, as in series reconstructed tightly or
        cropped after the fact: the flanks cut off (the kept width 80-97 % of the body's), the front or back
        sometimes too (70-100 % of the rows kept), the centre moved a little; no scan circle is visible then."""
        size, first, spacing = self.size.copy(), self.first_voxel.copy(), self.spacing
        centre = first + (size - 1) / 2 * spacing
        width_mm = 2 * body_half_width * rng.uniform(0.8, 0.97)
        size[0] = max(8, min(int(size[0]), int(round(width_mm / spacing[0]))))
        size[1] = max(8, int(round(size[1] * rng.uniform(0.7, 1.0))))
        centre[:2] = [rng.normal(0, 10), centre[1] + rng.normal(0, 10)]
        first[:2] = centre[:2] - (size[:2] - 1) / 2 * spacing[:2]
        return replace(self, size=size, first_voxel=first, circle_padding=None)

    def coarse_factors(self, target_mm: tuple[float, float, float] = (1.8, 1.8, 2.5)) -> np.ndarray:
        """Integer subsampling per axis (x, y, z) for painting: shapes are evaluated at about `target_mm`."""
        return np.maximum(1, np.round(np.asarray(target_mm) / self.spacing)).astype(int)

    def header(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """(spacing, origin, direction) of the image as stored, after the header flips."""
        direction = np.diag([-1.0 if f else 1.0 for f in self.flips])
        first = self.first_voxel + self.table_offset
        last = first + (self.size - 1) * self.spacing
        origin = np.where(self.flips, last, first)
        return (tuple(float(s) for s in self.spacing), tuple(float(o) for o in np.round(origin, 4)),
                tuple(float(d) for d in direction.ravel()))
