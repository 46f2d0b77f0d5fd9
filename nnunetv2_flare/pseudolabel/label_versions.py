"""Every round's labels as their own version, and labelsTr checked against the journal.

Each round's labels are kept in `labelsTr_round<k>/` from the moment the round is switched in (round 0, the labels
the dataset came with, when the first round starts), complete and never written again; `labelsTr/` holds a copy of
the current round's, which is what nnU-Net reads and what a user may edit. The journal records a SHA-256 digest of
every label file of every round (its manifest), so that labelsTr can be compared with the round it is supposed to
hold before anything builds on it.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunetv2_flare.atomic_io import atomic_path
from nnunetv2_flare.inference.models.digests import file_digest
from nnunetv2_flare.pseudolabel.dataset_state import DatasetStateError, FlareDataset

Manifest = dict[str, str]  # case id -> SHA-256 of its label file


def history_labels_folder(dataset: FlareDataset, round_: int) -> Path:
    return dataset.raw / f"labelsTr_round{round_}"


def labels_manifest(dataset: FlareDataset, folder: Path) -> Manifest:
    """The digest of each case's label file in `folder` (cases without one are left out)."""
    return {case: file_digest(dataset.label_file(case, folder)) for case in dataset.cases
            if dataset.label_file(case, folder).is_file()}


@dataclass
class LabelDrift:
    """How a labels folder differs from a recorded round."""
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # recorded, no file now
    added: list[str] = field(default_factory=list)  # a file now, not recorded
    same_as_round: int | None = None  # the folder holds exactly this other round's labels

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.added)

    def summary(self) -> str:
        parts = [f"{len(cases)} {what} ({', '.join(cases[:3])}{', ...' if len(cases) > 3 else ''})"
                 for what, cases in (("changed", self.changed), ("missing", self.missing),
                                     ("not in the round", self.added)) if cases]
        text = ", ".join(parts)
        if self.same_as_round is not None:
            text += f"; it holds exactly the labels of round {self.same_as_round}"
        return text


def manifest_drift(recorded: Manifest, found: Manifest) -> LabelDrift:
    return LabelDrift(changed=sorted(c for c in recorded.keys() & found.keys() if recorded[c] != found[c]),
                      missing=sorted(recorded.keys() - found.keys()), added=sorted(found.keys() - recorded.keys()))


def recorded_round(journal: dict[str, Any], round_: int) -> dict[str, Any]:
    for record in journal["rounds"]:
        if record["round"] == round_ and record["state"] == "done":
            return record
    done = [r["round"] for r in journal["rounds"] if r["state"] == "done"]
    raise DatasetStateError(f"there is no round {round_} to go back to: the rounds recorded are {done or 'none'} "
                            f"(list them with --rounds)")


def labels_drift(dataset: FlareDataset, journal: dict[str, Any]) -> LabelDrift:
    """How labelsTr differs from the current round's record (nothing recorded yet: no difference)."""
    current = [r for r in journal["rounds"] if r["round"] == journal["current_round"] and r["state"] == "done"]
    if not current:
        return LabelDrift()
    found = labels_manifest(dataset, dataset.labels_folder)
    drift = manifest_drift(current[0]["labels"], found)
    others = [r["round"] for r in journal["rounds"] if r["state"] == "done" and r["labels"] == found]
    if drift and others:
        drift.same_as_round = others[-1]
    return drift


def check_labels_match_journal(dataset: FlareDataset, journal: dict[str, Any]) -> None:
    """Refuse, in one line naming what changed, when labelsTr is not the current round as the journal records it."""
    drift = labels_drift(dataset, journal)
    if drift:
        k = journal["current_round"]
        raise DatasetStateError(
            f"{dataset.labels_folder} is not round {k} as {dataset.journal_path.name} records it: {drift.summary()}. "
            f"Go back to a recorded round with --restore_round J (J = {k} puts round {k} back; the labels found "
            f"now are kept in labelsTr_unrecorded_<time>), or keep these labels as round {k + 1} with --record_edits")


def check_version(dataset: FlareDataset, record: dict[str, Any]) -> None:
    """Refuse when a round's own folder no longer holds what its record says (the history was edited by hand)."""
    folder = history_labels_folder(dataset, record["round"])
    if not folder.is_dir():
        raise DatasetStateError(f"{folder}, the labels of round {record['round']}, is missing")
    drift = manifest_drift(record["labels"], labels_manifest(dataset, folder))
    if drift:
        raise DatasetStateError(f"{folder} no longer holds round {record['round']} as {dataset.journal_path.name} "
                                f"records it: {drift.summary()}; it was edited by hand, so it cannot be restored")


def copy_label_file(source: Path, target: Path) -> None:
    """Same bytes and modification time (an unchanged label looks unchanged to mtime-based tools too), renamed into
    place."""
    with atomic_path(target) as tmp:
        shutil.copy2(source, tmp)


def copy_labels(dataset: FlareDataset, source: Path, target: Path) -> None:
    """Every case's label file into a fresh `target`."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for case in dataset.cases:
        copy_label_file(dataset.label_file(case, source), dataset.label_file(case, target))


def keep_labels_as(dataset: FlareDataset, source: Path, name: str) -> Path:
    """A complete copy of `source` as `<raw>/<name>`, made under a hidden name and renamed into place."""
    staged = dataset.raw / f".{name}.partial"
    copy_labels(dataset, source, staged)
    os.rename(staged, dataset.raw / name)
    return dataset.raw / name
