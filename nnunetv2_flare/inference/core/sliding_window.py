"""Sliding-window labelling with the fewest tiles and hard tile ownership (no float logit accumulator).

Tiles: per axis the fewest patches whose overlap is at least `min_overlap` of the patch (default 0: the fewest that
cover the volume), spread evenly. Their code averages logits with uniform weights at overlap 0.05; here each voxel
takes the label of the tile whose centre is nearest along every axis (the overlap is split at its middle), a hard
form of nnU-Net's centre weighting. Only a uint8 label volume is kept at working resolution, never C float channels,
unless the cascade restores with linear interpolation (`sliding_window_scores`: C float16 channels as well).
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from nnunetv2_flare.inference.geometry import VoxelGrid
from nnunetv2_flare.inference.models.backends import SegmentationModel, argmax_labels

PATCH_PROGRESS_MIN_TILES = 8  # a patch progress bar only on long cases


class ScoresModel(Protocol):
    """Class scores (float, C x *shape) for an input (1, 1, *shape), array order as read: logits or probabilities,
    whatever the argmax labels come from (ensemble.FoldEnsemble.scores)."""

    def scores(self, x: np.ndarray, grid: VoxelGrid) -> np.ndarray: ...


def tile_starts(length: int, patch: int, min_overlap: float = 0.0) -> list[int]:
    if length <= patch:
        return [0]
    step = patch * (1 - min_overlap)
    n = math.ceil((length - patch) / step) + 1
    return [int(round(i * (length - patch) / (n - 1))) for i in range(n)]


def owned_ranges(starts: Sequence[int], patch: int, length: int) -> list[tuple[int, int]]:
    """Half-open range each tile writes: overlaps are split at their middle."""
    bounds = [0] + [(starts[i + 1] + starts[i] + patch) // 2 for i in range(len(starts) - 1)] + [length]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


def tile_count(shape: Sequence[int], patch: Sequence[int], min_overlap: float = 0.0) -> int:
    return math.prod(len(tile_starts(n, p, min_overlap)) for n, p in zip(shape, patch))


def _tiles(shape: Sequence[int], patch: Sequence[int], min_overlap: float, progress: bool
           ) -> Iterator[tuple[list[int], tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """Each tile's start, its window in the volume, the region it owns (writes) and that region within the tile."""
    assert all(n >= p for n, p in zip(shape, patch)), f"pad the volume {tuple(shape)} to at least the patch {patch}"
    per_axis = [tile_starts(n, p, min_overlap) for n, p in zip(shape, patch)]
    owned = [owned_ranges(s, p, n) for s, p, n in zip(per_axis, patch, shape)]
    tiles = list(itertools.product(*[range(len(s)) for s in per_axis]))
    bar = tqdm(tiles, desc="patches", leave=False, disable=not progress or len(tiles) < PATCH_PROGRESS_MIN_TILES)
    for tile in bar:
        start = [per_axis[a][i] for a, i in enumerate(tile)]
        window = tuple(slice(s, s + p) for s, p in zip(start, patch))
        dst = tuple(slice(*owned[a][i]) for a, i in enumerate(tile))
        src = tuple(slice(d.start - s, d.stop - s) for d, s in zip(dst, start))
        yield start, window, dst, src


def _check_tile(out: np.ndarray, patch: Sequence[int], what: str, channels: bool = False) -> None:
    """Labels must have exactly the patch's shape; class scores one more, leading axis."""
    if tuple(out.shape[1:] if channels else out.shape) != tuple(patch):
        raise RuntimeError(f"the organ model returned {what} of shape {tuple(out.shape)} for a patch {tuple(patch)}")


def sliding_window_labels(volume: np.ndarray, patch: Sequence[int], model: SegmentationModel,
                          grid_of_tile: Callable[[Sequence[int]], VoxelGrid], min_overlap: float = 0.0,
                          progress: bool = True) -> np.ndarray:
    """Argmax labels (uint8, shape of `volume`) of a normalized (Z, Y, X) volume at least `patch` in size."""
    labels = np.zeros(volume.shape, dtype=np.uint8)
    for start, window, dst, src in _tiles(volume.shape, patch, min_overlap, progress):
        tile_labels = np.asarray(model(volume[window][None, None], grid_of_tile(start)))
        _check_tile(tile_labels, patch, "labels")
        labels[dst] = tile_labels[src]
    return labels


def sliding_window_scores(volume: np.ndarray, patch: Sequence[int], model: ScoresModel,
                          grid_of_tile: Callable[[Sequence[int]], VoxelGrid], min_overlap: float = 0.0,
                          progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Argmax labels as `sliding_window_labels`, and the class scores they come from (C, *volume.shape), float16:
    half of float32's memory, and their precision is far finer than a label boundary needs."""
    labels = np.zeros(volume.shape, dtype=np.uint8)
    scores = None
    for start, window, dst, src in _tiles(volume.shape, patch, min_overlap, progress):
        tile_scores = np.asarray(model.scores(volume[window][None, None], grid_of_tile(start)))
        _check_tile(tile_scores, patch, "class scores", channels=True)
        if scores is None:
            scores = np.zeros((tile_scores.shape[0], *volume.shape), dtype=np.float16)
        scores[(slice(None), *dst)] = tile_scores[(slice(None), *src)]
        labels[dst] = argmax_labels(tile_scores[(slice(None), *src)])
    return labels, scores
