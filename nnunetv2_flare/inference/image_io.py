"""Reading CT inputs (NIfTI, MetaImage, NRRD files and DICOM series folders) and naming their predictions."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import SimpleITK as sitk

IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
OUTPUT_ENDING = ".nii.gz"
CHANNEL_SUFFIX = "_0000"  # nnU-Net's channel suffix of the (only) CT channel


@dataclass(frozen=True)
class InputCase:
    name: str
    path: Path  # an image file or a DICOM series folder

    def output_path(self, output_folder: str | os.PathLike, ending: str = OUTPUT_ENDING) -> Path:
        return Path(output_folder) / f"{self.name}{ending}"


def image_ending(path: str | os.PathLike) -> str | None:
    name = str(path).lower()
    return next((e for e in IMAGE_ENDINGS if name.endswith(e)), None)


def case_name(path: str | os.PathLike) -> str:
    """nnU-Net's naming: `case_0000.nii.gz` and `case.nii.gz` -> `case`; a DICOM folder -> the folder's name."""
    path = Path(path)
    ending = image_ending(path)
    name = path.name[: -len(ending)] if ending else path.name
    return name[: -len(CHANNEL_SUFFIX)] if name.endswith(CHANNEL_SUFFIX) else name


def dicom_series(folder: str | os.PathLike) -> list[str]:
    """Series UIDs of the DICOM files directly inside `folder` (empty if there are none)."""
    return [s for s in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))]


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and bool(dicom_series(folder))


def read_dicom_series(folder: str | os.PathLike) -> sitk.Image:
    series = dicom_series(folder)
    if not series:
        raise FileNotFoundError(f"No DICOM series in {folder}: give a folder holding the slices of one series.")
    if len(series) > 1:
        from nnunetv2_flare.inference.input_checks import InputRefused
        raise InputRefused(f"{Path(folder).name} holds {len(series)} DICOM series ({', '.join(series)}); put each "
                           f"series in its own folder.")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))  # sorted by slice position
    return reader.Execute()


def read_image(path: str | os.PathLike) -> sitk.Image:
    """One 3D CT as a SimpleITK image with its geometry, from a file or a DICOM series folder."""
    from nnunetv2_flare.inference.input_checks import (InputRefused, check_file_complete, check_nifti_header_spacing,
                                                       read_failure_reason, to_single_channel_3d)
    path = Path(path)
    if path.is_dir():
        try:
            image = read_dicom_series(path)
        except RuntimeError as e:  # ITK's multi-line text -> one line
            raise InputRefused(read_failure_reason(path, e)) from None
    elif path.is_file():
        check_file_complete(path)  # ITK reads truncated NIfTI files without an error
        try:
            check_nifti_header_spacing(path)
            image = sitk.ReadImage(str(path))
        except RuntimeError as e:
            raise InputRefused(read_failure_reason(path, e)) from None
    else:
        raise FileNotFoundError(f"{path} does not exist.")
    image, _ = to_single_channel_3d(image, path.name)  # a 4D image with one volume becomes 3D
    return image


def _cases_in_folder(folder: Path) -> list[InputCase]:
    images = [InputCase(case_name(p), p) for p in sorted(folder.iterdir())
              if p.is_file() and image_ending(p) and not p.name.startswith(".")]
    if not images and is_dicom_folder(folder):
        return [InputCase(folder.name, folder)]
    return images + [InputCase(p.name, p) for p in sorted(folder.iterdir()) if p.is_dir() and is_dicom_folder(p)]


def list_cases(inputs: Iterable[str | os.PathLike]) -> list[InputCase]:
    """Cases named by the inputs: image files, folders of images (and of DICOM series folders), DICOM folders.

    Raises with the list of what was tried when an input gives nothing, or when two inputs give the same name."""
    cases: list[InputCase] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            if not image_ending(path):
                raise ValueError(f"{path}: unsupported file type; supported are {', '.join(IMAGE_ENDINGS)} files "
                                 f"and DICOM series folders.")
            cases.append(InputCase(case_name(path), path))
        elif path.is_dir():
            found = _cases_in_folder(path)
            if not found:
                raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_ENDINGS)}) and no DICOM series found.")
            cases += found
        else:
            raise FileNotFoundError(f"Input {path} does not exist.")
    seen: dict[str, Path] = {}
    for case in cases:
        if case.name in seen:
            raise ValueError(f"Two inputs would write the same output {case.name}{OUTPUT_ENDING}: "
                             f"{seen[case.name]} and {case.path}. Rename one of them.")
        seen[case.name] = case.path
    return cases
