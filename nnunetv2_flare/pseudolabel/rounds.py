"""Round bookkeeping on an nnU-Net dataset: where each round lives on disk, the journal, the switch.

Layout (k = the round being made, j = k - 1 the current one):

    $nnUNet_raw/DatasetXXX/
        labelsTr/                       labels of the current round (what nnU-Net reads; a real folder)
        labelsTr_round0/ ... round<j-1>/ every earlier round, complete, never modified again
        pseudolabel_rounds.json         the journal (atomic writes)
        pseudolabel_round<k>_report.json  voxels gained / lost per organ, per case, in total
        .labelsTr_round<k>.partial/     the next round while it is being written (hidden)
        .pseudolabel_round<k>.work/     per-case results of the round in progress (lets a rerun continue)
    $nnUNet_preprocessed/DatasetXXX/
        gt_segmentations/, <Plans>_<cfg>/   current round (real folders)
        .gt_segmentations_round<k>.partial/, .<Plans>_<cfg>_round<k>.partial/   the next round being written

A round fills the hidden `.partial` folders completely, then switches: each preprocessed folder is renamed away and
its `.partial` renamed into place, then `labelsTr` is renamed to `labelsTr_round<j>` and the staged labels renamed to
`labelsTr`. Renames are atomic, so every folder holds one complete round; the journal records 'switching' before the
first rename, and a rerun finds the state and finishes the remaining renames (roll forward). Until 'switching' the
dataset is untouched: abandoning a round only means deleting hidden folders.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Any

from nnunetv2_flare.atomic_io import write_json_atomic
from nnunetv2_flare.pseudolabel.dataset_state import GT_FOLDER, DatasetStateError, FlareDataset

JOURNAL_FORMAT = 1
# a round's states, in order; 'done' is the only one in which the round's data are what nnU-Net reads
STATES = ("started", "labels_written", "preprocessed", "switching", "done")


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def history_labels_folder(dataset: FlareDataset, round_: int) -> Path:
    return dataset.raw / f"labelsTr_round{round_}"


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
    if journal.get("format") != JOURNAL_FORMAT:
        raise DatasetStateError(f"{dataset.journal_path} has format {journal.get('format')}, this version reads "
                                f"format {JOURNAL_FORMAT}")
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


def describe_rounds(dataset: FlareDataset) -> str:
    """The `--rounds` listing: one line per round, where its labels are, what changed."""
    journal = load_journal(dataset)
    current = journal["current_round"]
    lines = [f"{dataset.raw.name}: current round {current} (labels in {dataset.labels_folder})"]
    where0 = dataset.labels_folder if current == 0 else history_labels_folder(dataset, 0)
    lines.append(f"  round 0: the original labels, in {where0}")
    for r in journal["rounds"]:
        k = r["round"]
        where = dataset.labels_folder if k == current else (
            history_labels_folder(dataset, k) if r["state"] == "done" else staged_labels_folder(dataset, k))
        changed = r.get("changed_cases")
        summary = f", {len(changed)} cases changed" if changed is not None else ""
        lines.append(f"  round {k}: {r['state']} (started {r['started_at']}{summary}), model {r['settings']['model']}"
                     f" fold {r['settings']['fold']}, labels in {where}")
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
    j = k - 1
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
    if staged.is_dir():
        history = history_labels_folder(dataset, j)
        if dataset.labels_folder.is_dir():
            if history.exists():
                raise DatasetStateError(
                    f"both {dataset.labels_folder} and {history} exist while round {k} is being switched in; "
                    f"this is not a state this tool leaves behind. Check which folder holds round {j}, keep it as "
                    f"{history}, and run again")
            os.rename(dataset.labels_folder, history)
        os.rename(staged, dataset.labels_folder)
    journal["current_round"] = k
    set_state(dataset, journal, record, "done")
    for name in [*preprocessed_names, GT_FOLDER]:
        retired = retired_preprocessed_folder(dataset, name, j)
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
