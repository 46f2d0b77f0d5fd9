"""Round bookkeeping on an nnU-Net dataset: where each round lives on disk, the journal, the switch.

Layout (k = the round being made, j = k - 1 the current one):

    $nnUNet_raw/DatasetXXX/
        labelsTr/                       a copy of the current round's labels (what nnU-Net reads; a real folder)
        labelsTr_round0/ ... round<j>/  every round's labels, the current one included, complete, never written again
        pseudolabel_rounds.json         the journal (atomic writes): each round's kind, settings, state and the
                                        SHA-256 of each of its label files
        pseudolabel_round<k>_report.json  voxels gained / lost per organ, per case, in total
        labelsTr_unrecorded_<time>/     labels found in labelsTr that no round recorded, kept by --restore_round
        .labelsTr_round<k>.partial/     the next round while it is being written (hidden)
        .pseudolabel_round<k>.work/     per-case results of the round in progress (lets a rerun continue)
    $nnUNet_preprocessed/DatasetXXX/
        gt_segmentations/, <Plans>_<cfg>/   current round (real folders)
        .gt_segmentations_round<k>.partial/, .<Plans>_<cfg>_round<k>.partial/   the next round being written

A round fills the hidden `.partial` folders completely, then switches: each preprocessed folder is renamed away and
its `.partial` renamed into place; the staged labels are copied to `.labelsTr.partial`, renamed to
`labelsTr_round<k>`, and `.labelsTr.partial` replaces `labelsTr`. Renames are atomic, so every folder holds one
complete round; the journal records 'switching' before the first rename, and a rerun finds the state and finishes
the remaining steps (roll forward). Until 'switching' the dataset is untouched: abandoning a round only means
deleting hidden folders. Round 0 (the labels the dataset came with) is copied to `labelsTr_round0` when the first
round starts.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Any

from nnunetv2_flare.atomic_io import write_json_atomic
from nnunetv2_flare.pseudolabel.dataset_state import GT_FOLDER, DatasetStateError, FlareDataset
from nnunetv2_flare.pseudolabel.label_versions import (
    copy_labels,
    history_labels_folder,
    keep_labels_as,
    labels_drift,
    labels_manifest,
)

JOURNAL_FORMAT = 2
# a round's states, in order; 'done' is the only one in which the round's data are what nnU-Net reads
STATES = ("started", "labels_written", "preprocessed", "switching", "done")


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def staged_labels_folder(dataset: FlareDataset, round_: int) -> Path:
    return dataset.raw / f".labelsTr_round{round_}.partial"


def work_folder(dataset: FlareDataset, round_: int) -> Path:
    return dataset.raw / f".pseudolabel_round{round_}.work"


def report_path(dataset: FlareDataset, round_: int) -> Path:
    return dataset.raw / f"pseudolabel_round{round_}_report.json"


def staged_preprocessed_folder(dataset: FlareDataset, name: str, round_: int) -> Path:
    return dataset.preprocessed / f".{name}_round{round_}.partial"


def retired_preprocessed_folder(dataset: FlareDataset, name: str, round_: int) -> Path:
    return dataset.preprocessed / f".{name}_round{round_}.old"


# ---------------------------------------------------------------------------------------------------------- journal
def load_journal(dataset: FlareDataset) -> dict[str, Any]:
    import json
    if not dataset.journal_path.is_file():
        return {"format": JOURNAL_FORMAT, "current_round": 0, "rounds": []}
    journal = json.loads(dataset.journal_path.read_text())
    if journal.get("format") == 1:
        return _upgrade_format_1(dataset, journal)
    if journal.get("format") != JOURNAL_FORMAT:
        raise DatasetStateError(f"{dataset.journal_path} has format {journal.get('format')}, this version reads "
                                f"format {JOURNAL_FORMAT}")
    return journal


def _upgrade_format_1(dataset: FlareDataset, journal: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept the current round only in labelsTr and recorded no digests: keep labelsTr as the current
    round's folder, record every round's digests and round 0."""
    if unfinished_round(journal):
        raise DatasetStateError(f"{dataset.journal_path} (format 1) has an unfinished round: finish it with the "
                                f"version of nnunetv2_flare that started it, or delete its hidden folders and its "
                                f"journal entry")
    current = journal["current_round"]
    if not history_labels_folder(dataset, current).exists():
        keep_labels_as(dataset, dataset.labels_folder, history_labels_folder(dataset, current).name)
    original = {"round": 0, "kind": "original", "state": "done", "done_at": now()}
    journal["rounds"] = [original, *journal["rounds"]] if current else []
    for record in journal["rounds"]:
        record.setdefault("kind", "pseudolabel")
        record["labels"] = labels_manifest(dataset, history_labels_folder(dataset, record["round"]))
    journal["format"] = JOURNAL_FORMAT
    save_journal(dataset, journal)
    return journal


def save_journal(dataset: FlareDataset, journal: dict[str, Any]) -> None:
    write_json_atomic(journal, dataset.journal_path)


def unfinished_round(journal: dict[str, Any]) -> dict[str, Any] | None:
    if journal["rounds"] and journal["rounds"][-1]["state"] != "done":
        return journal["rounds"][-1]
    return None


def set_state(dataset: FlareDataset, journal: dict[str, Any], record: dict[str, Any], state: str,
              **extra: Any) -> None:
    assert state in STATES, state
    record["state"] = state
    record[f"{state}_at"] = now()
    record.update(extra)
    save_journal(dataset, journal)


def keep_original_round(dataset: FlareDataset, journal: dict[str, Any]) -> None:
    """Before the first round: labelsTr as round 0, in its own folder and in the journal."""
    if journal["rounds"]:
        return
    folder = history_labels_folder(dataset, 0)
    found = labels_manifest(dataset, dataset.labels_folder)
    if folder.exists():  # a first round interrupted between this copy and the journal write
        if labels_manifest(dataset, folder) != found:
            raise DatasetStateError(f"{folder} exists but the journal records no round and it differs from "
                                    f"{dataset.labels_folder}; move it away (it is not this tool's round 0)")
    else:
        keep_labels_as(dataset, dataset.labels_folder, folder.name)
    journal["rounds"].append({"round": 0, "kind": "original", "state": "done", "done_at": now(), "labels": found})
    save_journal(dataset, journal)


def round_title(record: dict[str, Any]) -> str:
    kind = record.get("kind", "pseudolabel")
    if kind == "original":
        return "the original labels"
    if kind == "restore":
        return f"round {record['settings']['restored_round']}'s labels restored"
    if kind == "edits":
        return "labelsTr as edited by hand"
    settings = record["settings"]
    return f"pseudo-labels of model {settings['model']} fold {settings['fold']}"


def describe_rounds(dataset: FlareDataset) -> str:
    """The `--rounds` listing: one line per round, where its labels are, what changed, and whether labelsTr is the
    current round as recorded."""
    journal = load_journal(dataset)
    current = journal["current_round"]
    if not journal["rounds"]:
        return (f"{dataset.raw.name}: current round 0, the original labels in {dataset.labels_folder} (kept as "
                f"labelsTr_round0 when the first round starts)")
    drift = labels_drift(dataset, journal)
    state = f"differs from round {current}: {drift.summary()}" if drift else f"holds round {current} as recorded"
    lines = [f"{dataset.raw.name}: current round {current}; {dataset.labels_folder} {state}"]
    for r in journal["rounds"]:
        k = r["round"]
        changed = r.get("changed_cases")
        summary = f", {len(changed)} cases changed" if changed is not None else ""
        where = history_labels_folder(dataset, k) if r["state"] == "done" else staged_labels_folder(dataset, k)
        lines.append(f"  round {k}: {round_title(r)}; {r['state']} {r.get(r['state'] + '_at', '')}{summary}, "
                     f"labels in {where}")
        if r["state"] == "done" and report_path(dataset, k).is_file():
            lines.append(f"           report {report_path(dataset, k)}")
    unfinished = unfinished_round(journal)
    if unfinished:
        lines.append(f"  round {unfinished['round']} is unfinished ({unfinished['state']}): run the same command again "
                     f"to finish it, or pass --restart to discard it")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------- switch
def switch_to_round(dataset: FlareDataset, journal: dict[str, Any], record: dict[str, Any],
                    preprocessed_names: list[str]) -> None:
    """Rename the staged folders into place. Idempotent: a rerun after a crash finishes what is left."""
    k = record["round"]
    j = journal["current_round"]
    if record["state"] != "switching":
        set_state(dataset, journal, record, "switching")
    for name in [*preprocessed_names, GT_FOLDER]:
        staged = staged_preprocessed_folder(dataset, name, k)
        live = dataset.preprocessed / name
        if not staged.is_dir():
            continue  # switched before the interruption
        if live.is_dir():
            retired = retired_preprocessed_folder(dataset, name, j)
            if retired.exists():
                shutil.rmtree(retired)
            os.rename(live, retired)
        os.rename(staged, live)
    staged = staged_labels_folder(dataset, k)
    next_live = dataset.raw / ".labelsTr.partial"
    retired_live = dataset.raw / ".labelsTr.old"
    if staged.is_dir():  # the copy for labelsTr is complete once the round's own folder has its name
        copy_labels(dataset, staged, next_live)
        os.rename(staged, history_labels_folder(dataset, k))
    if next_live.is_dir():
        if retired_live.exists():
            shutil.rmtree(retired_live)
        if dataset.labels_folder.is_dir():
            os.rename(dataset.labels_folder, retired_live)
        os.rename(next_live, dataset.labels_folder)
    journal["current_round"] = k
    set_state(dataset, journal, record, "done")
    for retired in [retired_live, *(retired_preprocessed_folder(dataset, n, j)
                                    for n in [*preprocessed_names, GT_FOLDER])]:
        if retired.exists():
            shutil.rmtree(retired)
    if work_folder(dataset, k).exists():
        shutil.rmtree(work_folder(dataset, k))


def discard_unfinished(dataset: FlareDataset, journal: dict[str, Any]) -> int | None:
    """Drop a round that has not started switching: delete its hidden folders and its journal entry."""
    record = unfinished_round(journal)
    if record is None:
        return None
    if record["state"] == "switching":
        raise DatasetStateError(f"round {record['round']} was interrupted while switching folders; it cannot be "
                                f"discarded half-way, run without --restart to finish it")
    k = record["round"]
    for folder in (staged_labels_folder(dataset, k), work_folder(dataset, k)):
        if folder.exists():
            shutil.rmtree(folder)
    for staged in dataset.preprocessed.glob(f".*_round{k}.partial"):
        shutil.rmtree(staged)
    journal["rounds"].pop()
    save_journal(dataset, journal)
    return k
