"""Colours of the labels (previews, 3D Slicer colour tables, DICOM-SEG), chosen by organ name so that a model
trained on any label set gets the same colours for the organs it shares with FLARE and distinct ones for the rest."""
from __future__ import annotations

import os

from nnunetv2_flare.atomic_io import atomic_write

RGB = tuple[int, int, int]

# one colour per FLARE organ, each told apart from every other at a glance (CIELAB distance at least 25) and none
# washed out (chroma at least 30, so that it shows over the grey CT); liver, spleen, aorta and IVC as in 3D Slicer's
# GenericAnatomyColors, the others chosen apart from them (Slicer's own stomach and liver are nearly one colour, its
# duodenum near-white)
ORGAN_COLORS: dict[str, RGB] = {
    "liver": (221, 130, 101), "spleen": (157, 108, 162), "right_kidney": (160, 60, 50),
    "left_kidney": (200, 90, 20), "kidney": (160, 60, 50), "pancreas": (249, 190, 120),
    "aorta": (224, 40, 40), "inferior_vena_cava": (0, 151, 206), "right_adrenal_gland": (244, 214, 49),
    "left_adrenal_gland": (150, 150, 20), "gallbladder": (60, 170, 70), "esophagus": (0, 200, 190),
    "stomach": (230, 100, 190), "duodenum": (110, 80, 230), "abdomen": (128, 174, 128),
}
# for names not above: well separated hues (matplotlib's tab10, as 8-bit RGB)
FALLBACK_COLORS: tuple[RGB, ...] = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def label_colors(label_names: dict[int, str]) -> dict[int, RGB]:
    """Label id -> RGB for every foreground label."""
    out: dict[int, RGB] = {}
    unknown = 0
    for label, name in sorted(label_names.items()):
        key = name.lower().replace(" ", "_")
        if key in ORGAN_COLORS:
            out[label] = ORGAN_COLORS[key]
        else:
            out[label] = FALLBACK_COLORS[unknown % len(FALLBACK_COLORS)]
            unknown += 1
    return out


def slicer_color_table(label_names: dict[int, str], colors: dict[int, RGB] | None = None) -> str:
    """3D Slicer's colour table text format (File > Add Data accepts .ctbl / .txt): `id name R G B A` per line.
    Names cannot hold spaces there, so spaces become underscores."""
    colors = colors or label_colors(label_names)
    lines = ["# 3D Slicer color table written by nnunetv2_flare", f"# {len(label_names) + 1} values",
             "0 background 0 0 0 0"]
    for label, name in sorted(label_names.items()):
        r, g, b = colors[label]
        lines.append(f"{label} {name.replace(' ', '_')} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


def write_color_table(path: str | os.PathLike, label_names: dict[int, str]) -> None:
    text = slicer_color_table(label_names)
    atomic_write(path, lambda tmp: tmp.write_text(text))
