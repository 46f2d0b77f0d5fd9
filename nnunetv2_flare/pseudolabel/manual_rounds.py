"""Rounds that no model makes: going back to an earlier round (`--restore_round J`) and keeping labels edited by
hand (`--record_edits`).

Both are rounds like the pseudo-label ones: the next number, their own `labelsTr_round<k>` folder, a report of what
changed, the same staging, journal states and switch (rounds.py), so the history stays one sequence and every
round of it can be gone back to. Their preprocessed data are remade for every case whose label changes, and for any
case whose preprocessed data do not match its new label (labels edited and preprocessed by hand, data missing).
"""
from __future__ import annotations

import datetime as _dt
import filecmp
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_flare.atomic_io import remove_stale_temporaries
from nnunetv2_flare.pseudolabel import rounds
from nnunetv2_flare.pseudolabel.dataset_state import GT_FOLDER, DatasetStateError, FlareDataset, case_problems
from nnunetv2_flare.pseudolabel.label_versions import (
    check_version,
    copy_label_file,
    history_labels_folder,
    keep_labels_as,
    labels_drift,
    recorded_round,
)
from nnunetv2_flare.pseudolabel.run_round import (
    CaseHook,
    MessageHook,
    Messages,
    RoundResult,
    build_report,
    case_entry,
    finish_interrupted_switch,
    open_round,
    resumable_record,
    stage_and_switch,
)


def restore_round(dataset: FlareDataset, round_: int, restart: bool = False, progress: bool = True,
                  after_case: CaseHook | None = None, on_message: MessageHook | None = None) -> RoundResult | None:
    """Make round `round_`'s labels the current ones again, as a new round (the rounds after it stay recorded;
    None: labelsTr holds them already). Labels in labelsTr that no round recorded are kept in
    `labelsTr_unrecorded_<time>/` first. `restart` discards an unfinished round first."""
    messages = Messages(on_message)
    journal = rounds.load_journal(dataset)
    record = rounds.unfinished_round(journal)
    if record is not None and record["state"] == "switching":
        return finish_interrupted_switch(dataset, journal, record, False, messages)
    settings = {"restored_round": int(round_)}
    record = resumable_record(dataset, journal, record, "restore", settings, restart, False, messages)
    source = recorded_round(journal, round_)
    check_version(dataset, source)
    if record is None:
        drift = labels_drift(dataset, journal)
        current = recorded_round(journal, journal["current_round"])
        if not drift and current["labels"] == source["labels"]:
            messages(f"{dataset.labels_folder} holds round {round_}'s labels already (as round {current['round']}): "
                     f"nothing to restore")
            return None
        if drift and drift.same_as_round is None:
            kept = keep_labels_as(dataset, dataset.labels_folder,
                                  f"labelsTr_unrecorded_{_dt.datetime.now():%Y%m%d-%H%M%S}")
            messages(f"{dataset.labels_folder} was not round {journal['current_round']} as recorded "
                     f"({drift.summary()}): its labels are kept in {kept}")
    return _manual_round(dataset, journal, record, "restore", settings, history_labels_folder(dataset, round_),
                         dataset.labels_folder, progress, after_case, messages)


def record_edits(dataset: FlareDataset, restart: bool = False, progress: bool = True,
                 after_case: CaseHook | None = None, on_message: MessageHook | None = None) -> RoundResult | None:
    """Keep labelsTr, edited since the current round, as the next round (None: labelsTr is the current round).
    `restart` discards an unfinished round first."""
    messages = Messages(on_message)
    journal = rounds.load_journal(dataset)
    if not journal["rounds"]:
        raise DatasetStateError(f"no round of {dataset.raw.name} is recorded yet: {dataset.labels_folder} is round 0 "
                                f"as it is, kept as labelsTr_round0 when the first round starts")
    record = rounds.unfinished_round(journal)
    if record is not None and record["state"] == "switching":
        return finish_interrupted_switch(dataset, journal, record, False, messages)
    record = resumable_record(dataset, journal, record, "edits", {}, restart, False, messages)
    current = journal["current_round"]
    if record is None:
        drift = labels_drift(dataset, journal)
        if not drift:
            messages(f"{dataset.labels_folder} holds round {current} as recorded: nothing to record")
            return None
        _check_edited_labels(dataset, drift.changed + drift.added)
        messages(f"recording {dataset.labels_folder} ({drift.summary()}) as round {current + 1}")
    return _manual_round(dataset, journal, record, "edits", {}, dataset.labels_folder,
                         history_labels_folder(dataset, current), progress, after_case, messages)


def _check_edited_labels(dataset: FlareDataset, cases: list[str]) -> None:
    """Every case has a label; edited labels lie on their image's grid and use the dataset's label values."""
    labels = {int(v) for v in dataset.dataset_json()["labels"].values() if isinstance(v, int)}
    problems = [f"{c}: label {dataset.label_file(c)} missing" for c in dataset.cases
                if not dataset.label_file(c).is_file()]
    for case in cases:
        problems.extend(p for p in case_problems(dataset, case, []) if "geometry" in p)
        values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(dataset.label_file(case))))).tolist())
        if not values <= labels:
            problems.append(f"{case}: label values {sorted(values - labels)} are not labels of the dataset")
    if problems:
        raise DatasetStateError(f"the edited labels of {dataset.raw.name} cannot be a round: {'; '.join(problems[:10])}"
                                f"{'; ...' if len(problems) > 10 else ''}")


def _read_or_empty(path: Path, like: Path) -> np.ndarray:
    if path.is_file():
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return np.zeros_like(sitk.GetArrayFromImage(sitk.ReadImage(str(like))))


def _manual_round(dataset: FlareDataset, journal: dict, record: dict | None, kind: str, settings: dict,
                  new_labels: Path, old_labels: Path, progress: bool, after_case: CaseHook | None,
                  messages: Messages) -> RoundResult:
    """A round whose labels are `new_labels`' files, reported against `old_labels`'."""
    k, record = open_round(dataset, journal, record, kind, settings, False, messages)
    staged = rounds.staged_labels_folder(dataset, k)
    staged.mkdir(exist_ok=True)
    remove_stale_temporaries(staged)
    classes = sorted(int(v) for v in dataset.dataset_json()["labels"].values() if isinstance(v, int) and v > 0)
    configurations = dataset.preprocessed_configurations()
    no_references = not (dataset.preprocessed / GT_FOLDER).is_dir()
    entries, regenerate = {}, []
    for case in tqdm(dataset.cases, desc=f"round {k}: labels", disable=not progress):
        new, old, target = (dataset.label_file(case, f) for f in (new_labels, old_labels, staged))
        if not target.is_file():
            copy_label_file(new, target)
        if old.is_file() and filecmp.cmp(old, new, shallow=False):
            entries[case] = case_entry(np.zeros(1, np.uint8), np.zeros(1, np.uint8), classes)
        else:
            entries[case] = case_entry(_read_or_empty(old, new), sitk.GetArrayFromImage(sitk.ReadImage(str(new))),
                                       classes)
        if entries[case]["changed"] or no_references or case_problems(dataset, case, configurations, staged):
            regenerate.append(case)
        if after_case is not None:
            after_case("labels", case)
    report = build_report(dataset, k, {"kind": kind, **settings}, entries, False)
    stage_and_switch(dataset, journal, record, entries, report, progress, after_case, regenerate)
    return RoundResult(k, report, False, messages=messages.lines)
