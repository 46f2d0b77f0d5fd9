"""Where a case's outputs go and the optional files written next to its label file.

`-o folder`: `<folder>/<case>.nii.gz` per case (nnU-Net). `-o seg.nii.gz` (or .nii / .mha / .nrrd) with one input
case: exactly that file (TotalSegmentator). Optional files share the label file's stem: `<stem>/<organ>.nii.gz`
(--split_masks), `<stem>.png` (--preview), `<stem>.ctbl` (--color_table, 3D Slicer), `<stem>.dcm` (DICOM-SEG).
They are written first and the label file last, each atomically: the label file marks a finished case (a rerun
skips it), so a case interrupted midway is predicted again whole.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.atomic_io import write_image_atomic
from nnunetv2_flare.inference.image_io import InputCase, image_ending, list_cases
from nnunetv2_flare.inference.label_colors import label_colors, write_color_table

if TYPE_CHECKING:
    from nnunetv2_flare.inference.cascade import CascadeResult

OUTPUT_TYPES = ("nifti", "dicom_seg")


@dataclass(frozen=True)
class OutputOptions:
    split_masks: bool = False  # one uint8 0/1 file per organ, named by the organ
    preview: bool = False  # PNG: three slices with the labels overlaid
    color_table: bool = False  # 3D Slicer colour table with the model's label names
    output_type: str = "nifti"  # "dicom_seg": also a DICOM Segmentation referencing the source series

    def __post_init__(self) -> None:
        if self.output_type not in OUTPUT_TYPES:
            raise ValueError(f"--output_type must be one of {', '.join(OUTPUT_TYPES)}; got {self.output_type!r}.")


def names_a_file(output: str | os.PathLike) -> bool:
    return bool(image_ending(output)) and not Path(output).is_dir()


def output_folder_of(output: str | os.PathLike) -> Path:
    return Path(output).parent if names_a_file(output) else Path(output)


def output_targets(cases: Sequence[InputCase], output: str | os.PathLike) -> tuple[Path, dict[str, Path]]:
    """The folder to write in and each case's label file. An output that ends like an image file and is not an
    existing folder names the file of a single case."""
    output = Path(output)
    if names_a_file(output):
        if len(cases) != 1:
            raise ValueError(f"-o {output} names one output file, but the inputs hold {len(cases)} cases; give an "
                             f"output folder instead.")
        return output.parent, {cases[0].name: output}
    return output, {case.name: case.output_path(output) for case in cases}


def check_request(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, options: OutputOptions) -> None:
    """The inputs, the output and the options fit together: one-line errors before any model loads or any folder is
    made."""
    cases = list_cases(inputs)
    output_targets(cases, output)
    if options.output_type == "dicom_seg":
        from nnunetv2_flare.inference.dicom_seg import check_dicom_inputs
        check_dicom_inputs(cases)


def stem_of(target: Path) -> Path:
    """`out/case.nii.gz` -> `out/case`: the base name of the files written next to it."""
    ending = image_ending(target) or target.suffix
    return target.with_name(target.name[: len(target.name) - len(ending)] if ending else target.name)


def organ_mask_name(name: str) -> str:
    """A file name from a label name (dataset.json names may hold spaces or slashes)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + ".nii.gz"


def write_split_masks(labels: sitk.Image, label_names: dict[int, str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayViewFromImage(labels)
    written = []
    for label, name in sorted(label_names.items()):
        mask = sitk.GetImageFromArray((array == label).astype(np.uint8))
        mask.CopyInformation(labels)
        path = folder / organ_mask_name(name)
        write_image_atomic(mask, path)
        written.append(path)
    return written


def write_extras(result: CascadeResult, case: InputCase, target: Path, options: OutputOptions,
                 label_names: dict[int, str]) -> dict[str, str | list[str]]:
    """The optional files of one case (before its label file); returns what was written, for the report."""
    stem = stem_of(target)
    written: dict[str, str | list[str]] = {}
    if options.split_masks:
        written["split_masks"] = [str(p) for p in write_split_masks(result.labels, label_names, stem)]
    if options.color_table:
        write_color_table(stem.with_name(stem.name + ".ctbl"), label_names)
        written["color_table"] = str(stem.with_name(stem.name + ".ctbl"))
    if options.preview:
        from nnunetv2_flare.inference.orientation import DEFAULT_ORIENTATION, plan_reorientation
        from nnunetv2_flare.inference.preview import render_preview
        path = stem.with_name(stem.name + ".png")
        # the preview draws LPS arrays, whatever orientation the models worked in: views, no copy of the scan
        image = result.canonical_image
        to_lps = plan_reorientation(image, DEFAULT_ORIENTATION)
        spacing_xyz = [image.GetSpacing()[to_lps.perm[j]] for j in range(3)]
        render_preview(path, to_lps.to_canonical(sitk.GetArrayViewFromImage(image)),
                       to_lps.to_canonical(result.canonical_labels), spacing_xyz[::-1], label_names,
                       label_colors(label_names), title=case.name)
        written["preview"] = str(path)
    if options.output_type == "dicom_seg":
        from nnunetv2_flare.inference.dicom_seg import write_dicom_seg
        path = stem.with_name(stem.name + ".dcm")
        if write_dicom_seg(result.labels, case.path, label_names, path):
            written["dicom_seg"] = str(path)
        else:
            written["dicom_seg"] = None
            result.warnings.append("No organ found: no DICOM-SEG written (it needs at least one segment).")
    return written
