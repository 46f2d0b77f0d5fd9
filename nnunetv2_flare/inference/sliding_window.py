"""Sliding-window labelling with the fewest tiles and hard tile ownership (no float logit accumulator).

Tiles: per axis the fewest patches whose overlap is at least `min_overlap` of the patch (default 0: the fewest that
cover the volume), spread evenly. Their code averages logits with uniform weights at overlap 0.05; here each voxel
takes the label of the tile whose centre is nearest along every axis (the overlap is split at its middle), a hard
form of nnU-Net's centre weighting. Only a uint8 label volume is kept at working resolution, never C float channels.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from nnunetv2_flare.inference.backends import SegmentationModel
from nnunetv2_flare.inference.geometry import VoxelGrid

PATCH_PROGRESS_MIN_TILES = 8  # a patch progress bar only on long cases


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


def sliding_window_labels(volume: np.ndarray, patch: Sequence[int], model: SegmentationModel,
                          grid_of_tile: Callable[[Sequence[int]], VoxelGrid], min_overlap: float = 0.0,
                          progress: bool = True) -> np.ndarray:
    """Argmax labels (uint8, shape of `volume`) of a normalized (Z, Y, X) volume at least `patch` in size."""
    shape = tuple(volume.shape)
    assert all(n >= p for n, p in zip(shape, patch)), f"pad the volume {shape} to at least the patch {patch}"
    per_axis = [tile_starts(n, p, min_overlap) for n, p in zip(shape, patch)]
    owned = [owned_ranges(s, p, n) for s, p, n in zip(per_axis, patch, shape)]
    labels = np.zeros(shape, dtype=np.uint8)
    tiles = list(itertools.product(*[range(len(s)) for s in per_axis]))
    bar = tqdm(tiles, desc="patches", leave=False, disable=not progress or len(tiles) < PATCH_PROGRESS_MIN_TILES)
    for tile in bar:
        start = [per_axis[a][i] for a, i in enumerate(tile)]
        window = tuple(slice(s, s + p) for s, p in zip(start, patch))
        tile_labels = np.asarray(model(volume[window][None, None], grid_of_tile(start)))
        if tuple(tile_labels.shape) != tuple(patch):
            raise RuntimeError(f"the organ model returned labels of shape {tuple(tile_labels.shape)} for a patch "
                               f"{tuple(patch)}")
        dst = tuple(slice(*owned[a][i]) for a, i in enumerate(tile))
        src = tuple(slice(d.start - s, d.stop - s) for d, s in zip(dst, start))
        labels[dst] = tile_labels[src]
    return labels
