"""A PNG per case (--preview): axial, coronal and sagittal slices through the organs, CT in an abdominal window,
labels as a colour overlay, a legend of the organs found; so a result can be checked without a viewer.

Drawn from LPS arrays (array x runs to the patient's left, y to the back, z up; case_outputs.py reorients), shown
as radiologists look at it: axial from the feet (patient's right on the image's left, front at the top), coronal
from the front, sagittal from the patient's left (front on the left), head up; pixels at their physical aspect.
matplotlib's object API (no pyplot): no global figure state, no display needed; drawn in matplotlib's default
style whatever the process set before (nnU-Net's progress plot calls seaborn.set(font_scale=2.5) for everyone).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

from nnunetv2_flare.atomic_io import atomic_write
from nnunetv2_flare.inference.outputs.label_colors import RGB

WINDOW_HU = (-160.0, 240.0)  # abdomen: level 40, width 400
OVERLAY_ALPHA = 0.5


@contextmanager
def default_style() -> Iterator[None]:
    """matplotlib's own defaults for the drawing inside, the caller's style restored after."""
    from matplotlib import style

    with style.context("default"):
        yield


def slice_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """The (z, y, x) voxel the three slices pass through: the labelled voxels' centre of mass (the volume's middle
    when nothing was labelled)."""
    found = np.argwhere(labels > 0)
    if not len(found):
        return tuple(n // 2 for n in labels.shape)
    centre = np.round(found.mean(axis=0)).astype(int)
    return tuple(int(c) for c in centre)


def overlay_rgb(ct_slice: np.ndarray, label_slice: np.ndarray, colors: dict[int, RGB]) -> np.ndarray:
    """RGB float image: the windowed CT in grey, each label blended with its colour."""
    lo, hi = WINDOW_HU
    grey = np.clip((ct_slice.astype(np.float32) - lo) / (hi - lo), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    table = np.zeros((max(max(colors, default=0), int(label_slice.max(initial=0))) + 1, 3), np.float32)
    for label, color in colors.items():
        table[label] = np.asarray(color, np.float32) / 255
    inside = label_slice > 0
    rgb[inside] = (1 - OVERLAY_ALPHA) * rgb[inside] + OVERLAY_ALPHA * table[label_slice[inside]]
    return rgb


def legend_handles(label_maps: Sequence[np.ndarray], label_names: dict[int, str], colors: dict[int, RGB]) -> list:
    """matplotlib legend patches of the named labels present in any of the label maps, in label order."""
    from matplotlib.patches import Patch

    present = sorted({int(v) for labels in label_maps for v in np.unique(labels) if v and int(v) in label_names})
    return [Patch(facecolor=np.asarray(colors[v]) / 255, edgecolor="none", label=label_names[v]) for v in present]


def render_preview(path: str | os.PathLike, ct: np.ndarray, labels: np.ndarray, spacing_zyx: Sequence[float],
                   label_names: dict[int, str], colors: dict[int, RGB], title: str = "") -> None:
    """Write the PNG atomically. `ct` (HU) and `labels` are (z, y, x) arrays of one grid."""
    with default_style():
        _draw_preview(path, ct, labels, spacing_zyx, label_names, colors, title)


def _draw_preview(path: str | os.PathLike, ct: np.ndarray, labels: np.ndarray, spacing_zyx: Sequence[float],
                  label_names: dict[int, str], colors: dict[int, RGB], title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    z, y, x = slice_centre(labels)
    sz, sy, sx = (float(s) for s in spacing_zyx)
    views = [  # (name, CT slice, label slice, row spacing / column spacing, origin of row 0)
        ("axial", ct[z], labels[z], sy / sx, "upper"),
        ("coronal", ct[:, y, :], labels[:, y, :], sz / sx, "lower"),
        ("sagittal", ct[:, :, x], labels[:, :, x], sz / sy, "lower"),
    ]
    fig = Figure(figsize=(15, 6), dpi=100, facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, (name, ct_slice, label_slice, aspect, origin) in zip(axes, views):
        ax.imshow(overlay_rgb(ct_slice, label_slice, colors), aspect=aspect, origin=origin, interpolation="nearest")
        ax.set_title(name, color="white")
        ax.axis("off")
    handles = legend_handles([labels], label_names, colors)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(7, len(handles)), facecolor="black",
                   labelcolor="white", frameon=False)
    else:
        fig.text(0.5, 0.04, "no organ found", color="white", ha="center")
    if title:
        fig.suptitle(title, color="white")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.14, wspace=0.03)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", facecolor="black"))
