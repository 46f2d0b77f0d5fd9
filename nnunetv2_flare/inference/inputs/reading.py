"""Reading CT inputs (NIfTI, MetaImage, NRRD files and DICOM series folders) and naming their predictions."""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import SimpleITK as sitk

IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
DICOM_FILE_ENDINGS = (".dcm", ".ima")  # a single slice given as input stands for its whole series
SERIES_UID_TAG = "0020|000e"
POSITION_TAG = "0020|0032"  # ImagePositionPatient: the slice's first voxel, mm
OUTPUT_ENDING = ".nii.gz"
CHANNEL_SUFFIX = "_0000"  # nnU-Net's channel suffix of the (only) CT channel
CHANNEL_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")  # nnU-Net's <case>_<channel> file names


@dataclass(frozen=True)
class InputCase:
    name: str
    path: Path  # an image file, a DICOM series folder, or one DICOM file standing for its series

    @property
    def is_dicom(self) -> bool:
        return self.path.is_dir() or is_dicom_file(self.path)

    def output_path(self, output_folder: str | os.PathLike, ending: str = OUTPUT_ENDING) -> Path:
        return Path(output_folder) / f"{self.name}{ending}"


def image_ending(path: str | os.PathLike) -> str | None:
    name = str(path).lower()
    return next((e for e in IMAGE_ENDINGS if name.endswith(e)), None)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """A .dcm / .ima file, or a file of another name that starts with DICOM's preamble and 'DICM' (scanners and
    PACS exports often name slices without an extension)."""
    if str(path).lower().endswith(DICOM_FILE_ENDINGS):
        return True
    if image_ending(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def case_name(path: str | os.PathLike) -> str:
    """nnU-Net's naming: `case_0000.nii.gz` and `case.nii.gz` -> `case`; a DICOM folder -> the folder's name; a DICOM
    file -> its folder's name (the case is its series)."""
    path = Path(path)
    if is_dicom_file(path):
        return path.absolute().parent.name  # not resolve(): a linked slice belongs to the folder it is linked in
    ending = image_ending(path)
    name = path.name[: -len(ending)] if ending else path.name
    return name[: -len(CHANNEL_SUFFIX)] if name.endswith(CHANNEL_SUFFIX) else name


@contextlib.contextmanager
def itk_warnings_off() -> Iterator[None]:
    """ITK's multi-line warnings ("No Series were found" for every folder without slices) off while the package
    says what matters in one line; the caller's setting comes back after."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def dicom_series(folder: str | os.PathLike) -> list[str]:
    """Series UIDs of the DICOM files directly inside `folder` (empty if there are none)."""
    with itk_warnings_off():
        return [s for s in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))]


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return folder.is_dir() and bool(dicom_series(folder))


def series_uid_of_file(path: str | os.PathLike) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if not reader.HasMetaDataKey(SERIES_UID_TAG):
        from nnunetv2_flare.inference.inputs.checks import InputRefused
        raise InputRefused(f"{Path(path).name}: a DICOM file without a SeriesInstanceUID; give its series folder.")
    return reader.GetMetaData(SERIES_UID_TAG).strip().rstrip("\x00")


def dicom_series_files(path: str | os.PathLike) -> list[str]:
    """The slice files of the series a DICOM folder holds (exactly one), or of the series of one DICOM file, sorted
    by slice position as SimpleITK reads them (array index z = list index)."""
    path = Path(path)
    if path.is_file():
        folder, uid = path.parent, series_uid_of_file(path)
    else:
        series = dicom_series(path)
        if not series:
            raise FileNotFoundError(f"No DICOM series in {path}: give a folder holding the slices of one series.")
        if len(series) > 1:
            from nnunetv2_flare.inference.inputs.checks import InputRefused
            raise InputRefused(f"{path.name} holds {len(series)} DICOM series ({', '.join(series)}); put each "
                               f"series in its own folder, or give one file of the series you want.")
        folder, uid = path, series[0]
    with itk_warnings_off():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def read_dicom_series(path: str | os.PathLike) -> sitk.Image:
    """The series on the grid ITK builds from it, after checking that its slices are where that grid puts them
    (input_checks.check_slice_positions)."""
    from nnunetv2_flare.inference.inputs.checks import check_slice_positions

    files = dicom_series_files(path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # every slice's position, for the check
    with itk_warnings_off():
        image = reader.Execute()
    positions = [reader.GetMetaData(k, POSITION_TAG) if reader.HasMetaDataKey(k, POSITION_TAG) else None
                 for k in range(len(files))]
    check_slice_positions(image, positions, Path(path).name)
    return image


def read_image(path: str | os.PathLike) -> sitk.Image:
    """One 3D CT as a SimpleITK image with its geometry, from a file or a DICOM series folder."""
    from nnunetv2_flare.inference.inputs.checks import (
        InputRefused,
        check_file_complete,
        check_nifti_header_spacing,
        read_failure_reason,
        to_single_channel_3d,
    )
    path = Path(path)
    if path.is_dir() or (path.is_file() and is_dicom_file(path)):
        try:
            image = read_dicom_series(path)
        except FileNotFoundError:
            if not path.is_dir():
                raise
            return read_image(_single_case(path))  # the API's predict('study'): the one case below it, as the CLI
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


def _single_case(folder: Path) -> Path:
    """The one case a folder holds (an image file, or a DICOM series at any depth), or a refusal naming them."""
    from nnunetv2_flare.inference.inputs.checks import InputRefused

    cases = list_cases([folder])
    if len(cases) != 1:
        raise InputRefused(f"{folder.name} holds {len(cases)} cases ({', '.join(c.name for c in cases[:4])}"
                           f"{' ...' if len(cases) > 4 else ''}); predict one at a time, or all with predict_files.")
    return cases[0].path


def _dicom_folders_below(folder: Path) -> list[Path]:
    """Every folder below `folder`, at any depth (study / series / ...), that holds DICOM slices itself."""
    found, seen = [], {os.path.realpath(folder)}
    for root, dirs, _ in os.walk(folder, followlinks=True):  # linked series folders count, as they did before
        keep = []
        for d in sorted(dirs):
            real = os.path.realpath(os.path.join(root, d))
            if not d.startswith(".") and real not in seen:  # a link back up must not loop
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        if Path(root) != folder and is_dicom_folder(root):
            found.append(Path(root))
    return found


def _cases_in_folder(folder: Path) -> list[InputCase]:
    """Image files directly inside (nnU-Net's flat folders), or the folder itself as one DICOM series, plus the DICOM
    series folders below it at any depth, named by their path below `folder` (`study_series`)."""
    images = [InputCase(case_name(p), p) for p in sorted(folder.iterdir())
              if p.is_file() and image_ending(p) and not p.name.startswith(".")]
    if not images and is_dicom_folder(folder):
        images = [InputCase(folder.name, folder)]
    return images + [InputCase("_".join(p.relative_to(folder).parts), p) for p in _dicom_folders_below(folder)]


def _refuse_extra_channels(cases: list[InputCase]) -> None:
    """`case_0001.nii.gz` next to `case_0000.nii.gz` is case's second channel in nnU-Net's naming, not a case of its
    own; the models take one channel (CT), so such an input is a dataset made for another model: refuse it up front.
    (`scan_0001.nii.gz` without a `scan_0000` is an ordinary case name and stays one.)"""
    from nnunetv2_flare.errors import UsageError

    first_channels = {(c.path.parent, c.name) for c in cases
                      if c.path.is_file() and c.path.name[: -len(image_ending(c.path) or "")].endswith(CHANNEL_SUFFIX)}
    for c in cases:
        match = CHANNEL_NAME.match(c.name)
        if match and c.path.is_file() and (c.path.parent, match["case"]) in first_channels:
            raise UsageError(f"{c.path}: channel {match['channel']} of case {match['case']} in nnU-Net's naming "
                             f"(<case>_<channel>); the FLARE models take one channel, the CT ({match['case']}"
                             f"{CHANNEL_SUFFIX}). Remove the other channels' files from the input.")


def list_cases(inputs: Iterable[str | os.PathLike]) -> list[InputCase]:
    """Cases named by the inputs: image files, folders of images (and of DICOM series folders), DICOM folders.

    Raises with the list of what was tried when an input gives nothing, or when two inputs give the same name."""
    cases: list[InputCase] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            if not image_ending(path) and not is_dicom_file(path):
                raise ValueError(f"{path}: unsupported file type; supported are {', '.join(IMAGE_ENDINGS)} files, "
                                 f"DICOM series folders and single DICOM files ({', '.join(DICOM_FILE_ENDINGS)}: "
                                 f"their series).")
            cases.append(InputCase(case_name(path), path))
        elif path.is_dir():
            found = _cases_in_folder(path)
            if not found:
                raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_ENDINGS)}) and no DICOM series found.")
            cases += found
        else:
            raise FileNotFoundError(f"Input {path} does not exist.")
    _refuse_extra_channels(cases)
    seen: dict[str, Path] = {}
    for case in cases:
        if case.name in seen:
            raise ValueError(f"Two inputs would write the same output {case.name}{OUTPUT_ENDING}: "
                             f"{seen[case.name]} and {case.path}. Rename one of them.")
        seen[case.name] = case.path
    return cases
