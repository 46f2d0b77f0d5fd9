"""Where a dataset's labels and preprocessed data live, and the checks that they agree before a round starts."""
from __future__ import annotations

import filecmp
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import SimpleITK as sitk
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_flare.names import PLANS

GT_FOLDER = "gt_segmentations"
JOURNAL_NAME = "pseudolabel_rounds.json"


class DatasetStateError(RuntimeError):
    """The dataset is not in a state a round can start from; the message says what to do."""


@dataclass
class FlareDataset:
    """One nnU-Net dataset: raw folder (imagesTr, labelsTr) and preprocessed folder (plans, configurations)."""
    raw: Path
    preprocessed: Path
    plans_identifier: str
    file_ending: str
    images: dict[str, list[Path]] = field(repr=False)

    @classmethod
    def open(cls, raw: str | os.PathLike, preprocessed: str | os.PathLike,
             plans_identifier: str = PLANS) -> "FlareDataset":
        raw, preprocessed = Path(raw), Path(preprocessed)
        for folder, what in ((raw, "raw"), (preprocessed, "preprocessed")):
            if not folder.is_dir():
                raise DatasetStateError(f"{what} dataset folder {folder} does not exist")
        dataset_json = json.loads((raw / "dataset.json").read_text())
        if "dataset" in dataset_json:
            raise DatasetStateError(
                f"{raw / 'dataset.json'} lists its files under 'dataset'; pseudo-label rounds need the standard "
                f"imagesTr/labelsTr layout (they switch the labelsTr folder as a whole)")
        file_ending = dataset_json["file_ending"]
        if not (preprocessed / f"{plans_identifier}.json").is_file():
            raise DatasetStateError(
                f"plans {preprocessed / (plans_identifier + '.json')} not found: plan and preprocess the dataset "
                f"first (nnUNetv2_flare_plan_and_preprocess), or pass the plans name with -p")
        images: dict[str, list[Path]] = {}
        suffix_len = len(file_ending) + 5  # "_0000" + ending
        for f in sorted((raw / "imagesTr").iterdir()):
            if f.name.endswith(file_ending) and not f.name.startswith("."):
                images.setdefault(f.name[:-suffix_len], []).append(f)
        if not images:
            raise DatasetStateError(f"no training images in {raw / 'imagesTr'}")
        return cls(raw, preprocessed, plans_identifier, file_ending, images)

    @property
    def cases(self) -> list[str]:
        return sorted(self.images)

    @property
    def labels_folder(self) -> Path:
        return self.raw / "labelsTr"

    @property
    def journal_path(self) -> Path:
        return self.raw / JOURNAL_NAME

    @property
    def plans_file(self) -> Path:
        return self.preprocessed / f"{self.plans_identifier}.json"

    def label_file(self, case: str, folder: Path | None = None) -> Path:
        return (folder or self.labels_folder) / f"{case}{self.file_ending}"

    def plans_manager(self) -> PlansManager:
        return PlansManager(str(self.plans_file))

    def dataset_json(self) -> dict:
        """The preprocessed copy, the one nnU-Net's preprocessing and training read."""
        path = self.preprocessed / "dataset.json"
        return json.loads((path if path.is_file() else self.raw / "dataset.json").read_text())

    def preprocessed_configurations(self) -> dict[str, str]:
        """data folder name -> one configuration using it, for every configuration whose data exist on disk.

        Configurations that share a data identifier (flare_organs_narrow inherits flare_organs' data) are
        refreshed once.
        """
        plans_manager = self.plans_manager()
        found: dict[str, str] = {}
        for name in plans_manager.available_configurations:
            identifier = plans_manager.get_configuration(name).data_identifier
            if identifier not in found and (self.preprocessed / identifier).is_dir():
                found[identifier] = name
        return found


def _read_label(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # a copy: a view dies with its image


def geometry_mismatch(image_file: Path, label_file: Path, tolerance: float = 1e-4) -> str | None:
    """Why the label does not lie on its image's grid (header only), or None."""
    infos = []
    for f in (image_file, label_file):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        reader.ReadImageInformation()
        infos.append(reader)
    im, lb = infos
    if im.GetSize() != lb.GetSize():
        return f"size {lb.GetSize()} vs image {im.GetSize()}"
    for what in ("Spacing", "Origin", "Direction"):
        a = np.array(getattr(im, f"Get{what}")())
        b = np.array(getattr(lb, f"Get{what}")())
        scale = np.maximum(np.abs(a), 1.0) if what != "Direction" else 1.0
        if np.any(np.abs(a - b) > tolerance * scale):
            return f"{what.lower()} {tuple(b)} vs image {tuple(a)}"
    return None


def case_problems(dataset: FlareDataset, case: str, configurations: Iterable[str],
                  labels_folder: Path | None = None) -> list[str]:
    """Why a case's preprocessed data are not those of its label in `labels_folder` (default labelsTr): the label
    is missing or off its image's grid, gt_segmentations/<case> holds another label (compared by bytes, as nnU-Net
    copies it, else by voxels), or a configuration folder lacks the case."""
    folder = labels_folder or dataset.labels_folder
    label = dataset.label_file(case, folder)
    if not label.is_file():
        return [f"{case}: label {label} missing"]
    problems = []
    mismatch = geometry_mismatch(dataset.images[case][0], label)
    if mismatch:
        problems.append(f"{case}: label geometry differs from its image: {mismatch}")
    gt = dataset.preprocessed / GT_FOLDER
    gt_file = dataset.label_file(case, gt)
    if gt.is_dir():
        if not gt_file.is_file():
            problems.append(f"{case}: {gt_file} missing")
        elif not filecmp.cmp(label, gt_file, shallow=False) and \
                not np.array_equal(_read_label(label), _read_label(gt_file)):
            problems.append(f"{case}: {folder.name} and {GT_FOLDER} differ (labels edited after preprocessing?)")
    for identifier in configurations:
        for suffix in (".b2nd", "_seg.b2nd", ".pkl"):
            if not (dataset.preprocessed / identifier / f"{case}{suffix}").is_file():
                problems.append(f"{case}: {identifier}/{case}{suffix} missing")
    return problems


def check_dataset_consistency(dataset: FlareDataset, cases: list[str] | None = None) -> None:
    """Refuse (DatasetStateError) unless labels, images and preprocessed data agree for every case
    (`case_problems`). All problems are collected and reported together."""
    cases = dataset.cases if cases is None else cases
    problems: list[str] = []
    if dataset.journal_path.is_file():
        rounds = json.loads(dataset.journal_path.read_text()).get("rounds", [])
        if rounds and rounds[-1]["state"] == "switching":
            # folders are renamed one by one; the file contents cannot tell which ones are switched already
            raise DatasetStateError(
                f"round {rounds[-1]['round']} of {dataset.raw.name} was interrupted while its folders were being "
                f"switched in: run nnUNetv2_flare_pseudolabel again with the same arguments to finish it")
    gt = dataset.preprocessed / GT_FOLDER
    configurations = dataset.preprocessed_configurations()
    if not gt.is_dir():
        problems.append(f"{gt} is missing")
    if not configurations:
        problems.append(f"no preprocessed configuration of {dataset.plans_identifier} found in {dataset.preprocessed}")
    for case in cases:
        problems.extend(case_problems(dataset, case, configurations))
    if problems:
        shown = "; ".join(problems[:20]) + (f"; ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise DatasetStateError(
            f"the labels and preprocessed data of {dataset.raw.name} disagree, so a pseudo-label round would build "
            f"on stale data: {shown}. Fix the labels (same grid as the images) and re-run the preprocessing of "
            f"this dataset (nnUNetv2_flare_plan_and_preprocess) before starting a round.")
