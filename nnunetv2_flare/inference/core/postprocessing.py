"""Connected-component filters of the cascade (cc3d, 26-connectivity)."""
from __future__ import annotations

import cc3d
import numpy as np


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Binary mask without the foreground components smaller than `min_voxels`."""
    if min_voxels <= 1 or not mask.any():
        return mask.astype(bool)
    components = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[components]


def keep_largest_component_per_label(labels: np.ndarray) -> np.ndarray:
    """Each label value keeps only its largest connected component (ties: the first found); background stays 0."""
    if not labels.any():
        return labels
    components = cc3d.connected_components(labels, connectivity=26)  # components never mix label values
    flat_c, flat_l = components.ravel(), labels.ravel()
    sizes = np.bincount(flat_c)
    label_of = np.zeros(sizes.size, dtype=labels.dtype)
    label_of[flat_c] = flat_l
    keep = np.zeros(sizes.size, dtype=bool)
    for value in np.unique(label_of[1:]):
        if value == 0:
            continue
        ids = np.flatnonzero(label_of == value)
        ids = ids[ids > 0]
        keep[ids[np.argmax(sizes[ids])]] = True
    return np.where(keep[components], labels, 0).astype(labels.dtype)


def keep_connected_to(labels: np.ndarray, region: tuple[slice, ...]) -> np.ndarray:
    """`labels` where their component (26-connected, one label value) has a voxel in `region`; elsewhere 0. Every
    labelled voxel of `region` is kept."""
    components = cc3d.connected_components(labels, connectivity=26)  # components never mix label values
    keep = np.zeros(int(components.max()) + 1, dtype=bool)
    keep[np.unique(components[region])] = True
    keep[0] = False
    return np.where(keep[components], labels, 0).astype(labels.dtype, copy=False)
