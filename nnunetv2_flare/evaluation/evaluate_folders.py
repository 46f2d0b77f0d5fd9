"""Score a folder of predictions against a folder of reference label maps with FLARE's DSC and NSD.

Per case the numbers are FLARE's official script's (metrics.py states the rules): images are read with SimpleITK and
handed to the metric in nibabel's axis order with the header's 32-bit voxel size, as the script sees them.
Deliberate differences at folder level (cli.DELIBERATE_DIFFERENCES): a reference without a prediction is scored as
an empty prediction and listed, where the script skips it; predictions without a reference are listed and not
scored; a folder where no prediction matches a reference is refused.

Every file is checked before it is scored, so that nothing is scored silently wrong: an empty, truncated or
unreadable file, a prediction on another grid than its reference (all before any scoring), and voxels that are not
FLARE labels (not whole numbers, or outside 0..13: a CT in HU, another label set such as TotalSegmentator's 117)
are errors that name the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_flare.evaluation.metrics import NSD_DSC_THRESHOLD, evaluate_case
from nnunetv2_flare.labels import FLARE_ORGANS, NSD_TOLERANCE_MM, Z_RANGE_RESTRICTED

GEOMETRY_TOLERANCE = 1e-3


def flare_array_and_spacing(image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A label image as FLARE's script sees it: the voxel array in nibabel's axis order (x, y, z) and the voxel size
    as the NIfTI header stores it (32-bit floats: nibabel's `get_zooms()`, which FLARE's script uses)."""
    if image.GetDimension() != 3:
        raise ValueError(f"need a 3-d label image, got {image.GetDimension()}-d")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # SimpleITK gives (z, y, x)
    # SimpleITK hands the spacing as doubles; FLARE's script uses the header's 32-bit values (nibabel's zooms).
    # Rounding to 32 bits keeps the two equal, so distances that equal a tolerance compare as in the script
    spacing = tuple(float(s) for s in np.asarray(image.GetSpacing(), dtype=np.float32))
    return array, spacing


def label_file_header(path: Path) -> sitk.ImageFileReader:
    """The header of a label file after checking the file is complete (ITK reads a truncated NIfTI without an
    error and fills the gap with zeros) and readable; ValueError naming the file otherwise."""
    from nnunetv2_flare.inference.inputs.checks import InputRefused, check_file_complete

    try:
        check_file_complete(path)
    except InputRefused as e:
        raise ValueError(f"{path.parent.name}/{e}") from None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ValueError(f"{path}: not a readable image (unknown format or a corrupt file).") from None
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise ValueError(f"{path}: a {reader.GetDimension()}-d image with {reader.GetNumberOfComponents()} values per "
                         f"voxel; a label map is 3-d with one label per voxel.")
    return reader


def check_label_values(array: np.ndarray, path: Path) -> None:
    """Voxels must be FLARE labels: whole numbers 0..13."""
    low, high = float(array.min()), float(array.max())
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise ValueError(f"{path}: not a label map (values that are not whole numbers, {low:g}..{high:g}); give "
                         f"integer labels 0..{max(FLARE_ORGANS)}.")
    if low < 0 or high > max(FLARE_ORGANS):
        what = "a CT in HU?" if low < 0 else "another label set, e.g. TotalSegmentator's?"
        raise ValueError(f"{path}: values {low:g}..{high:g}, not FLARE's labels 0..{max(FLARE_ORGANS)} ({what}); "
                         f"map them to FLARE's ids first.")


def read_label_map(path: Path) -> sitk.Image:
    label_file_header(path)
    image = sitk.ReadImage(str(path))
    check_label_values(sitk.GetArrayViewFromImage(image), path)
    return image


def _check_same_grid(ref, pred, name: str) -> None:
    if ref.GetSize() != pred.GetSize():
        raise ValueError(f"{name}: prediction size {pred.GetSize()} != reference size {ref.GetSize()}; predictions "
                         "must be written on the reference image's grid")
    for what, a, b in (("spacing", ref.GetSpacing(), pred.GetSpacing()), ("origin", ref.GetOrigin(), pred.GetOrigin()),
                       ("direction", ref.GetDirection(), pred.GetDirection())):
        if not np.allclose(a, b, atol=GEOMETRY_TOLERANCE, rtol=GEOMETRY_TOLERANCE):
            raise ValueError(f"{name}: prediction {what} {b} != reference {what} {a}; predictions must be written on "
                             "the reference image's grid")


def evaluate_files(ref_file: str | Path, pred_file: str | Path | None, labels: Sequence[int]) -> dict:
    """Scores of one case; `pred_file=None` (missing prediction) scores as an empty prediction."""
    ref_image = read_label_map(Path(ref_file))
    ref, spacing = flare_array_and_spacing(ref_image)
    if pred_file is None:
        pred = np.zeros(ref.shape, np.uint8)
    else:
        pred_image = read_label_map(Path(pred_file))
        _check_same_grid(ref_image, pred_image, Path(ref_file).name)
        pred, _ = flare_array_and_spacing(pred_image)
    scores = evaluate_case(ref, pred, spacing, labels=labels)
    return {"reference_file": str(ref_file), "prediction_file": None if pred_file is None else str(pred_file),
            "missing_prediction": pred_file is None, **scores}


def evaluate_folders(ref_folder: str | Path, pred_folder: str | Path, labels: Iterable[int] | None = None,
                     file_ending: str = ".nii.gz", progress: bool = True) -> dict:
    """FLARE scores of every reference case in `ref_folder` against the file of the same name in `pred_folder`.

    A reference without a prediction is scored as an empty prediction (every organ present in the reference gets
    DSC = NSD = 0) and listed under "missing_predictions"; predictions without a reference are listed under
    "unmatched_predictions". No prediction matching any reference, a file that is not a complete, readable FLARE
    label map, and a prediction on another grid are ValueErrors. `labels` restricts scoring to some organs (for
    partially labelled references). Returns the summary dict that `nnUNetv2_flare_evaluate` writes as JSON.
    """
    ref_folder, pred_folder = Path(ref_folder), Path(pred_folder)
    if not ref_folder.is_dir():
        raise FileNotFoundError(f"reference folder {ref_folder} does not exist")
    if not pred_folder.is_dir():
        raise FileNotFoundError(f"prediction folder {pred_folder} does not exist")
    ref_files, pred_files = (label_files(folder, file_ending) for folder in (ref_folder, pred_folder))
    if not ref_files:
        raise FileNotFoundError(f"no '*{file_ending}' reference files in {ref_folder}")
    matched = {name: pred_folder / name for name in ref_files if name in pred_files}
    if not matched:
        found = f"{len(pred_files)} '*{file_ending}' files there" + (f", e.g. {pred_files[0]}" if pred_files else "")
        raise ValueError(f"no prediction in {pred_folder} has the name of a reference in {ref_folder} ({found}; the "
                         f"references are named like {ref_files[0]}); predictions are matched to references by "
                         f"file name.")
    for name in ref_files:  # the cheap checks first: a broken or misplaced file stops the command before scoring
        reference = label_file_header(ref_folder / name)
        if name in matched:
            _check_same_grid(reference, label_file_header(matched[name]), name)
    labels = sorted(FLARE_ORGANS) if labels is None else sorted(int(label) for label in labels)
    cases = [evaluate_files(ref_folder / name, matched.get(name), labels)
             for name in tqdm(ref_files, desc="evaluating", disable=not progress)]
    return summarize(cases, labels, [name for name in pred_files if name not in ref_files])


def label_files(folder: Path, file_ending: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(file_ending) and not p.name.startswith(".")
                  and p.is_file())


def summarize(cases: list[dict], labels: Sequence[int], unmatched: Sequence[str] = ()) -> dict:
    def organ_means(metric: str) -> dict[str, float]:
        return {FLARE_ORGANS[label]: float(np.mean([c[metric][label] for c in cases])) for label in labels}

    return {
        "labels": {str(label): FLARE_ORGANS[label] for label in labels},
        "nsd_tolerance_mm": {FLARE_ORGANS[label]: NSD_TOLERANCE_MM[label] for label in labels},
        "rules": {
            "absent_in_both": "DSC = NSD = 1", "absent_in_one": "DSC = NSD = 0",
            "z_range_restricted": [FLARE_ORGANS[label] for label in Z_RANGE_RESTRICTED],
            "z_range": "reference's [first, last) labelled slice along the third (nibabel) axis; "
                       "the one slice where it is labelled on one slice only",
            "nsd_zero_below_dsc": NSD_DSC_THRESHOLD,
            "surface": "Nikolov et al. surface Dice: corner surface elements weighted by area, distance <= tolerance",
            "missing_prediction": "scored as an empty prediction",
            "unmatched_prediction": "a prediction without a reference of its name: listed, not scored",
        },
        "num_cases": len(cases),
        "missing_predictions": [Path(c["reference_file"]).name for c in cases if c["missing_prediction"]],
        "unmatched_predictions": list(unmatched),
        "mean_DSC": float(np.mean([c["mean_DSC"] for c in cases])),
        "mean_NSD": float(np.mean([c["mean_NSD"] for c in cases])),
        "per_organ": {"DSC": organ_means("DSC"), "NSD": organ_means("NSD")},
        "per_case": [{**c, "DSC": {FLARE_ORGANS[label]: v for label, v in c["DSC"].items()},
                      "NSD": {FLARE_ORGANS[label]: v for label, v in c["NSD"].items()}} for c in cases],
    }


def format_table(summary: dict) -> str:
    lines = [f"{'organ':<22}{'DSC':>8}{'NSD':>8}"]
    for organ, dsc in summary["per_organ"]["DSC"].items():
        lines.append(f"{organ:<22}{dsc:>8.4f}{summary['per_organ']['NSD'][organ]:>8.4f}")
    lines.append(f"{'mean over cases':<22}{summary['mean_DSC']:>8.4f}{summary['mean_NSD']:>8.4f}")
    lines.append("")
    lines.append(f"{'case':<40}{'DSC':>8}{'NSD':>8}")
    for case in summary["per_case"]:
        name = Path(case["reference_file"]).name + (" (missing prediction)" if case["missing_prediction"] else "")
        lines.append(f"{name:<40}{case['mean_DSC']:>8.4f}{case['mean_NSD']:>8.4f}")
    return "\n".join(lines)
