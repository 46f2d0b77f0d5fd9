"""A PNG that puts label maps of one CT side by side, a row each (the demo: reference above, prediction below), on
the same axial and coronal slices, with organ colours and a legend; drawn with the --preview overlay."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.atomic_io import atomic_write
from nnunetv2_flare.inference.outputs.label_colors import label_colors
from nnunetv2_flare.inference.outputs.preview import default_style, legend_handles, overlay_rgb, slice_centre


def render_rows(path: str | os.PathLike, ct: np.ndarray, rows: Mapping[str, np.ndarray],
                spacing_zyx: Sequence[float], label_names: Mapping[int, str], title: str = "") -> None:
    """Write the PNG atomically. `ct` (HU) and every label map are (z, y, x) arrays of one LPS-ordered grid; the
    slices pass through the centre of the first row's organs."""
    with default_style():
        _draw_rows(path, ct, rows, spacing_zyx, label_names, title)


def _draw_rows(path: str | os.PathLike, ct: np.ndarray, rows: Mapping[str, np.ndarray],
               spacing_zyx: Sequence[float], label_names: Mapping[int, str], title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colors = label_colors(dict(label_names))
    z, y, _ = slice_centre(next(iter(rows.values())))
    sz, sy, sx = (float(s) for s in spacing_zyx)
    fig = Figure(figsize=(10, 4.6 * len(rows) + 1), dpi=80, facecolor="black")
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(len(rows), 2)).reshape(len(rows), 2)
    for row, (name, labels) in zip(axes, rows.items()):
        # axial seen from the feet (patient's right on the left, front up); coronal from the front, head up
        views = ((f"{name}: axial {z}", ct[z], labels[z], sy / sx, "upper"),
                 (f"{name}: coronal {y}", ct[:, y], labels[:, y], sz / sx, "lower"))
        for ax, (view, ct_slice, label_slice, aspect, origin) in zip(row, views):
            ax.imshow(overlay_rgb(ct_slice, label_slice, colors), aspect=aspect, origin=origin,
                      interpolation="nearest")
            ax.set_title(view, color="white")
            ax.axis("off")
    handles = legend_handles(list(rows.values()), dict(label_names), colors)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), facecolor="black",
                   labelcolor="white", frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9 if title else 0.96, bottom=0.12, wspace=0.03, hspace=0.12)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", facecolor="black"))


def render_comparison(image_file: Path, label_files: Mapping[str, Path], output: Path,
                      label_names: Mapping[int, str], title: str = "") -> None:
    """`render_rows` from files: the CT and label maps on its grid (any header direction)."""
    def lps(file: Path) -> sitk.Image:  # so that the slices are shown the radiological way whatever the flips
        return sitk.DICOMOrient(sitk.ReadImage(str(file)), "LPS")

    image = lps(image_file)
    rows = {name: sitk.GetArrayFromImage(lps(f)).astype(np.uint8) for name, f in label_files.items()}
    render_rows(output, sitk.GetArrayFromImage(image), rows, image.GetSpacing()[::-1], label_names, title)
