"""Where a case's outputs go and the optional files written next to its label file.

`-o folder`: `<folder>/<case>.nii.gz` per case (nnU-Net). `-o seg.nii.gz` (or .nii / .mha / .nrrd: one-file
formats, so that a file is replaced in one rename) with one input case: exactly that file (TotalSegmentator).
Companion files share the label file's stem: `<stem>/<organ>.nii.gz` (--split_masks), `<stem>.png` (--preview),
`<stem>.ctbl` (--color_table, 3D Slicer), `<stem>.dcm` (DICOM-SEG). They follow their label file: a case predicted
again first loses its old label file and companions, then gets the new companions and, last, the new label file,
each written atomically. The label file marks a finished case and records its request (request_record.py), so a
case interrupted midway is predicted again whole and no label file stands beside another request's companions.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.inference.inputs.nifti_transforms import NiftiTransforms, write_label_image
from nnunetv2_flare.inference.inputs.reading import InputCase, image_ending
from nnunetv2_flare.inference.outputs.label_colors import label_colors, write_color_table

if TYPE_CHECKING:
    from nnunetv2_flare.inference.core.result import CascadeResult

OUTPUT_TYPES = ("nifti", "dicom_seg")
OUTPUT_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd")  # -o FILE: the one-file formats among IMAGE_ENDINGS
# a name ending in a word (.txt, .json, .dcm) reads as a file; -o takes it as a folder only with a trailing slash
FILE_LIKE_SUFFIX = re.compile(r"\.[A-Za-z]{1,5}$")
# companion files: the option, its letter in the label file's request record, the ending after the stem
COMPANIONS = (("split_masks", "s", ""), ("preview", "p", ".png"), ("color_table", "c", ".ctbl"),
              ("dicom_seg", "d", ".dcm"))


@dataclass(frozen=True)
class OutputOptions:
    split_masks: bool = False  # one uint8 0/1 file per organ, named by the organ
    preview: bool = False  # PNG: three slices with the labels overlaid
    color_table: bool = False  # 3D Slicer colour table with the model's label names
    output_type: str = "nifti"  # "dicom_seg": also a DICOM Segmentation referencing the source series

    def __post_init__(self) -> None:
        if self.output_type not in OUTPUT_TYPES:
            raise ValueError(f"--output_type must be one of {', '.join(OUTPUT_TYPES)}; got {self.output_type!r}.")

    def companion_letters(self) -> str:
        """The companions asked for, as the request record lists them."""
        asked = {"split_masks": self.split_masks, "preview": self.preview, "color_table": self.color_table,
                 "dicom_seg": self.output_type == "dicom_seg"}
        return "".join(letter for option, letter, _ in COMPANIONS if asked[option])


def names_a_file(output: str | os.PathLike) -> bool:
    return bool(image_ending(output)) and not Path(output).is_dir()


def check_output_name(output: str | os.PathLike) -> None:
    """-o is a folder or a label file in a one-file format; refuse two-file formats (.mhd, .nhdr: a header naming a
    data file cannot be replaced in one rename) and names that read as a file of another kind (seg.txt)."""
    text = str(output)
    if names_a_file(text) and image_ending(text) not in OUTPUT_ENDINGS:
        raise ValueError(f"-o {text}: {image_ending(text)} keeps its voxels in a second file, which cannot be "
                         f"replaced together with its header; give {', '.join(OUTPUT_ENDINGS)}.")
    if not image_ending(text) and FILE_LIKE_SUFFIX.search(text) and not Path(text).is_dir() \
            and not text.endswith(("/", os.sep)):
        raise ValueError(f"-o {text}: not a label file format ({', '.join(OUTPUT_ENDINGS)}) and not an existing "
                         f"folder; give e.g. -o {stem_of(Path(text)).name}.nii.gz for one case, or a folder (end the "
                         f"name with / to create one).")


def output_folder_of(output: str | os.PathLike) -> Path:
    return Path(output).parent if names_a_file(output) else Path(output)


def output_targets(cases: Sequence[InputCase], output: str | os.PathLike) -> tuple[Path, dict[str, Path]]:
    """The folder to write in and each case's label file. An output that ends like an image file and is not an
    existing folder names the file of a single case."""
    check_output_name(output)
    output = Path(output)
    if names_a_file(output):
        if len(cases) != 1:
            raise ValueError(f"-o {output} names one output file, but the inputs hold {len(cases)} cases; give an "
                             f"output folder instead.")
        return output.parent, {cases[0].name: output}
    return output, {case.name: case.output_path(output) for case in cases}


def check_outputs_apart_from_inputs(cases: Sequence[InputCase], targets: dict[str, Path],
                                    output: str | os.PathLike) -> None:
    """No companion file of a case would be written into an input (e.g. `-i cohort/a -o cohort`: a's split masks
    would go into the DICOM folder cohort/a)."""
    inputs_at = {c.path.absolute(): c.path for c in cases}
    for case in cases:
        for path in companion_files(targets[case.name].absolute()).values():
            hit = next((p for p in (path, *path.parents) if p in inputs_at), None)
            if hit is not None:
                raise ValueError(f"-o {output}: the outputs of {case.name} ({path}) would be written into the input "
                                 f"{inputs_at[hit]}; choose an output folder apart from the inputs.")


def stem_of(target: Path) -> Path:
    """`out/case.nii.gz` -> `out/case`: the base name of the files written next to it."""
    ending = image_ending(target) or target.suffix
    return target.with_name(target.name[: len(target.name) - len(ending)] if ending else target.name)


def companion_files(target: Path) -> dict[str, Path]:
    """Letter -> where each companion of the label file `target` goes (the split masks: their folder)."""
    stem = stem_of(Path(target))
    return {letter: stem.with_name(stem.name + ending) for _, letter, ending in COMPANIONS}


def remove_companions(target: Path) -> None:
    """The companion files of the label file `target` (written by an earlier request): they go with their labels."""
    files = companion_files(target)
    for letter, path in files.items():
        if letter == "s":
            for mask in path.glob("*.nii.gz") if path.is_dir() else ():
                mask.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # a folder holding other files is left
                path.rmdir()
        else:
            path.unlink(missing_ok=True)


def organ_mask_name(name: str) -> str:
    """A file name from a label name (dataset.json names may hold spaces or slashes)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + ".nii.gz"


def write_split_masks(labels: sitk.Image, label_names: dict[int, str], folder: Path,
                      transforms: NiftiTransforms | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayViewFromImage(labels)
    written = []
    for label, name in sorted(label_names.items()):
        mask = sitk.GetImageFromArray((array == label).astype(np.uint8))
        mask.CopyInformation(labels)
        path = folder / organ_mask_name(name)
        write_label_image(mask, path, transforms)
        written.append(path)
    return written


def write_extras(result: CascadeResult, case: InputCase, target: Path, options: OutputOptions,
                 label_names: dict[int, str]) -> tuple[dict[str, str | list[str] | None], str]:
    """The companion files of one case (before its label file): what was written, for the report, and the
    letters of the request record (upper case: asked for, not written)."""
    files = companion_files(target)
    written: dict[str, str | list[str] | None] = {}
    letters = options.companion_letters()
    if options.split_masks:
        written["split_masks"] = [str(p) for p in write_split_masks(result.labels, label_names, files["s"],
                                                                    result.nifti_transforms)]
    if options.color_table:
        write_color_table(files["c"], label_names)
        written["color_table"] = str(files["c"])
    if options.preview:
        from nnunetv2_flare.inference.inputs.orientation import DEFAULT_ORIENTATION, plan_reorientation
        from nnunetv2_flare.inference.outputs.preview import render_preview
        # the preview draws LPS arrays, whatever orientation the models worked in: views, no copy of the scan
        image = result.canonical_image
        to_lps = plan_reorientation(image, DEFAULT_ORIENTATION)
        spacing_xyz = [image.GetSpacing()[to_lps.perm[j]] for j in range(3)]
        render_preview(files["p"], to_lps.to_canonical(sitk.GetArrayViewFromImage(image)),
                       to_lps.to_canonical(result.canonical_labels), spacing_xyz[::-1], label_names,
                       label_colors(label_names), title=case.name)
        written["preview"] = str(files["p"])
    if options.output_type == "dicom_seg":
        from nnunetv2_flare.inference.outputs.dicom_seg import write_dicom_seg
        if write_dicom_seg(result.labels, case.path, label_names, files["d"], result.warnings):
            written["dicom_seg"] = str(files["d"])
        else:
            written["dicom_seg"] = None
            letters = letters.replace("d", "D")
            result.warnings.append("No organ found: no DICOM-SEG written (it needs at least one segment).")
    return written, letters
