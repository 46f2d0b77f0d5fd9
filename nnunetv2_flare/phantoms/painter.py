"""Paint shapes into a coarse voxel grid of tissue ids and organ labels, in the patient's physical frame.

Coordinates are in mm in the anatomy frame: x towards the patient's left, y towards the back, z towards the head
(DICOM's LPS axes). Each shape is evaluated only inside its own bounding box, which keeps a whole abdomen at a few
hundred milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

KEEP = -1  # label argument: leave the organ label as it is (e.g. vessels inside the liver stay liver)


@dataclass(frozen=True)
class Grid:
    """Voxel centres: origin + index * spacing, per axis, in (x, y, z) order; arrays are indexed (z, y, x)."""
    origin: np.ndarray
    spacing: np.ndarray
    shape_zyx: tuple[int, int, int]

    def axis(self, i: int) -> np.ndarray:
        n = self.shape_zyx[2 - i]
        return (self.origin[i] + np.arange(n) * self.spacing[i]).astype(np.float32)


Box = tuple[slice, slice, slice]


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix (angles in degrees, applied about x, then y, then z); columns are the rotated axes."""
    ax, ay, az = np.deg2rad([rx, ry, rz])
    mx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    my = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    mz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return mz @ my @ mx


def catmull_rom(points: np.ndarray, radii: np.ndarray, step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Dense samples of a smooth curve through `points` (N, 3) with linearly interpolated radii."""
    points = np.asarray(points, float)
    radii = np.asarray(radii, float)
    padded = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    samples, sample_radii = [], []
    for i in range(len(points) - 1):
        p0, p1, p2, p3 = padded[i:i + 4]
        n = max(2, int(np.ceil(np.linalg.norm(p2 - p1) / step_mm)))
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        samples.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
        sample_radii.append(radii[i] + (radii[i + 1] - radii[i]) * t[:, 0])
    samples.append(points[-1:])
    sample_radii.append(radii[-1:])
    return np.vstack(samples), np.concatenate(sample_radii)


class Painter:
    def __init__(self, grid: Grid):
        self.grid = grid
        self.tissue = np.zeros(grid.shape_zyx, np.uint8)
        self.label = np.zeros(grid.shape_zyx, np.uint8)
        self.x, self.y, self.z = grid.axis(0), grid.axis(1), grid.axis(2)
        self.confine_masks: dict[str, np.ndarray] = {}

    # --- boxes ---------------------------------------------------------------------------------------------------
    def box(self, lo: np.ndarray, hi: np.ndarray) -> Box | None:
        """Index box of the voxels whose centres lie in the physical box [lo, hi] (x, y, z); None if empty."""
        start = np.ceil((np.asarray(lo) - self.grid.origin) / self.grid.spacing).astype(int)
        stop = np.floor((np.asarray(hi) - self.grid.origin) / self.grid.spacing).astype(int) + 1
        shape_xyz = self.grid.shape_zyx[::-1]
        start = np.clip(start, 0, shape_xyz)
        stop = np.clip(stop, 0, shape_xyz)
        if np.any(stop <= start):
            return None
        return slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0])

    def coordinates(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (x, y, z) coordinate arrays of a box."""
        return (self.x[box[2]][None, None, :], self.y[box[1]][None, :, None], self.z[box[0]][:, None, None])

    # --- writing -------------------------------------------------------------------------------------------------
    def apply(self, box: Box, mask: np.ndarray, tissue: int | np.ndarray, label: int = KEEP,
              confine: str | None = None, only_label: int | None = None, only_tissue: tuple[int, ...] | None = None
              ) -> None:
        if confine is not None:
            mask = mask & self.confine_masks[confine][box]
        if only_label is not None:
            mask = mask & (self.label[box] == only_label)
        if only_tissue is not None:
            mask = mask & np.isin(self.tissue[box], only_tissue)
        tissue_view = self.tissue[box]
        if isinstance(tissue, np.ndarray):
            tissue_view[mask] = np.broadcast_to(tissue, mask.shape)[mask]
        else:
            tissue_view[mask] = tissue
        if label != KEEP:
            self.label[box][mask] = label

    # --- shapes --------------------------------------------------------------------------------------------------
    def blob_mask(self, center, radii, rot: np.ndarray | None = None, modulation: np.ndarray | None = None,
                  exponent: float = 2.0) -> tuple[Box, np.ndarray] | None:
        """Deformed superquadric: an ellipsoid (exponent 2; larger = flatter ends along local z) whose radius is
        modulated by low-order polynomials of the direction (smooth bumps, tapering, egg shapes)."""
        center, radii = np.asarray(center, float), np.asarray(radii, float)
        rot = np.eye(3) if rot is None else rot
        reach = radii.max() * (1.0 + (0.0 if modulation is None else float(np.abs(modulation).sum())))
        box = self.box(center - reach, center + reach)
        if box is None:
            return None
        x, y, z = self.coordinates(box)
        d = (x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2]))
        q = [sum(np.float32(rot[j, i]) * d[j] for j in range(3)) / np.float32(radii[i]) for i in range(3)]
        if exponent == 2.0:
            rho = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
        else:
            rho = ((q[0] ** 2 + q[1] ** 2) ** (exponent / 2) + np.abs(q[2]) ** exponent) ** (1.0 / exponent)
        if modulation is None:
            return box, rho <= 1.0
        u = [qi / np.maximum(rho, 1e-6) for qi in q]
        basis = (u[0], u[1], u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2], u[0] ** 2 - u[1] ** 2,
                 2 * u[2] ** 2 - u[0] ** 2 - u[1] ** 2, u[0] * u[1] * u[2])
        bound = 1.0 + sum(np.float32(a) * b for a, b in zip(modulation, basis))
        return box, rho <= bound

    def blob(self, center, radii, tissue: int, label: int = KEEP, rot=None, modulation=None, exponent: float = 2.0,
             **kwargs) -> None:
        result = self.blob_mask(center, radii, rot, modulation, exponent)
        if result is not None:
            self.apply(*result, tissue, label, **kwargs)

    def tube_mask(self, points, radii, step_mm: float | None = None) -> tuple[Box, np.ndarray] | None:
        """Union of balls along a smooth curve (vessels, bowel, stomach, ducts)."""
        radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
        step = step_mm or max(0.5, 0.5 * float(radii.min()))
        centers, ball_radii = catmull_rom(np.asarray(points, float), radii, step)
        big = ball_radii.max()
        box = self.box(centers.min(axis=0) - big, centers.max(axis=0) + big)
        if box is None:
            return None
        start = np.array([box[2].start, box[1].start, box[0].start])
        stop = np.array([box[2].stop, box[1].stop, box[0].stop])
        mask = np.zeros(tuple(stop[::-1] - start[::-1]), bool)
        # all ball boxes at once, relative to the tube's box
        reach = ball_radii[:, None]
        lo = np.clip(np.ceil((centers - reach - self.grid.origin) / self.grid.spacing).astype(int), start, stop)
        hi = np.clip(np.floor((centers + reach - self.grid.origin) / self.grid.spacing).astype(int) + 1, start, stop)
        axes = (self.x[box[2]], self.y[box[1]], self.z[box[0]])
        lo, hi = (lo - start).tolist(), (hi - start).tolist()
        for c, r, (x0, y0, z0), (x1, y1, z1) in zip(centers.astype(np.float32), ball_radii, lo, hi):
            if x1 <= x0 or y1 <= y0 or z1 <= z0:
                continue
            dx = (axes[0][x0:x1] - c[0]) ** 2
            dy = (axes[1][y0:y1] - c[1]) ** 2
            dz = (axes[2][z0:z1] - c[2]) ** 2
            mask[z0:z1, y0:y1, x0:x1] |= (dz[:, None, None] + dy[None, :, None] + dx[None, None, :]) <= r * r
        return box, mask

    def tube(self, points, radii, tissue: int, label: int = KEEP, **kwargs) -> None:
        result = self.tube_mask(points, radii)
        if result is not None:
            self.apply(*result, tissue, label, **kwargs)

    def hollow_tube(self, points, radii, wall_mm: float, wall_tissue: int,
                    lumen: Callable[[Box], np.ndarray | int], label: int = KEEP, **kwargs) -> None:
        """Tube with a wall; `lumen(box)` gives the content tissue (e.g. air above a fluid level)."""
        radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
        self.tube(points, radii, wall_tissue, label, **kwargs)
        inner = self.tube_mask(points, np.maximum(radii - wall_mm, 0.5))
        if inner is not None:
            box, mask = inner
            self.apply(box, mask, lumen(box), label, **kwargs)
