"""The request a label file was made for, recorded in the file itself, and what a rerun does with an existing one.

Every label file nnUNetv2_flare_predict writes carries one line in its header (NIfTI's `descrip`; the file notes of
MetaImage and NRRD), written in the same atomic rename as the labels, so it travels with the file through a cohort
split over -num_parts, a copy or a move of the folder:

    nnunetv2-flare p=<input's location> i=<input's bytes> m=<models> o=<options> w=<companion files>

p, i, m and o are the first 40 bits of SHA-256 digests: p of the input's resolved path; i of its bytes (an image
file, with the data file of a .mhd / .nhdr header; every file of a DICOM series, in slice order); m of each model
folder's plans.json, dataset.json and checkpoints; o of the options that change the labels (folds, TTA, restore,
orientation, --roi_subset, the backend, ...; not the thread count). w lists the companion files: s split masks,
p preview, c colour table, d DICOM-SEG; an upper-case letter was asked for but not written (a DICOM-SEG with no
organ found).

`decide` turns an existing output and the request at hand into keep / predict again / refuse, with the reason.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from nnunetv2_flare.inference.inputs.nifti_transforms import FILE_NOTES
from nnunetv2_flare.inference.inputs.reading import InputCase, dicom_series_files
from nnunetv2_flare.inference.models.digests import file_digest, short_digest

PREFIX = "nnunetv2-flare"
_RECORD = re.compile(rf"^{PREFIX} p=(?P<p>[0-9a-f]+) i=(?P<i>[0-9a-f]+) m=(?P<m>[0-9a-f]+) o=(?P<o>[0-9a-f]+) "
                     rf"w=(?P<w>[a-zA-Z]*)$")


@dataclass(frozen=True)
class Request:
    path: str
    content: str
    models: str
    options: str
    companions: str = ""  # letters of case_outputs.COMPANIONS; upper case: asked for, none written

    def note(self) -> str:
        return f"{PREFIX} p={self.path} i={self.content} m={self.models} o={self.options} w={self.companions}"

    @classmethod
    def parse(cls, text: str) -> Request | None:
        match = _RECORD.match(text.strip().rstrip("\x00"))
        return None if match is None else cls(*(match[k] for k in "pimow"))

    def asked_companions(self) -> str:
        return "".join(sorted(self.companions.lower()))


def _data_files(header: Path) -> list[Path]:
    """The data file a two-file header (.mhd, .nhdr) names, where it names one in its folder."""
    separator, key = {".mhd": ("=", "elementdatafile"), ".nhdr": (":", "datafile")}.get(header.suffix.lower(),
                                                                                         (None, None))
    if key is None:
        return []
    for line in header.read_text(errors="replace").splitlines():
        name, _, value = line.partition(separator)
        if name.strip().lower().replace(" ", "") == key:
            data = header.parent / value.strip()
            return [data] if value.strip() and data.is_file() else []
    return []


def input_digests(case: InputCase) -> tuple[str, str]:
    """(location, content) of an input case: its resolved path, and the bytes of every file it is read from."""
    path = case.path
    files = [Path(f) for f in dicom_series_files(path)] if case.is_dicom else [path, *_data_files(path)]
    return short_digest(str(path.resolve())), short_digest(*(file_digest(f) for f in files))


def options_digest(options: dict) -> str:
    return short_digest(json.dumps(options, sort_keys=True, default=str))


def recorded_request(label_file: str | os.PathLike) -> Request | None:
    """The request recorded in a label file's header; None for a file without one (another program's, an earlier
    version's) or one that is not a readable image."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(label_file))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return Request.parse(reader.GetMetaData(FILE_NOTES)) if reader.HasMetaDataKey(FILE_NOTES) else None


@dataclass(frozen=True)
class Decision:
    action: str  # "keep", "predict" or "refuse"
    reason: str = ""


def decide(target: Path, wanted: Request, companion_files: dict[str, Path], overwrite: bool,
           named_file: bool) -> Decision:
    """What to do with `target` for the request `wanted`. `companion_files`: letter -> the path a companion of
    this request would have. `named_file`: -o named this one file (a new request replaces it); in a folder, a
    label file of another input with the same case name is refused, never replaced without --overwrite."""
    if not target.exists():
        return Decision("predict")
    if overwrite:
        return Decision("predict", "--overwrite")
    recorded = recorded_request(target)
    if recorded is None:
        return Decision("refuse", f"{target} exists and records no request of nnUNetv2_flare_predict (another "
                                  f"program or an earlier version wrote it); --overwrite replaces it, or choose "
                                  f"another -o.")
    if recorded.content != wanted.content:
        if recorded.path == wanted.path:
            return Decision("predict", "the input changed since its labels were made")
        if not named_file:
            return Decision("refuse", f"{target} holds the labels of another input with the same case name (another "
                                      f"path and other bytes); give this input another -o folder, or --overwrite "
                                      f"to replace them.")
        return Decision("predict", "it held the labels of another input")
    if recorded.models != wanted.models:
        return Decision("predict", "its labels were made with other models")
    if recorded.options != wanted.options:
        return Decision("predict", "its labels were made with other options")
    if recorded.asked_companions() != wanted.asked_companions():
        return Decision("predict", "other companion files are asked for (--split_masks, --preview, --color_table, "
                                   "--output_type)")
    missing = [str(companion_files[letter]) for letter in recorded.companions
               if letter in companion_files and not companion_files[letter].exists()]
    if missing:
        return Decision("predict", f"its companion {missing[0]} is missing")
    return Decision("keep")
