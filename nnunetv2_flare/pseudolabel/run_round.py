"""One pseudo-label round on an nnU-Net dataset (paper Algorithm 1): the Python API the CLI wraps.

    predict -> combine -> stage labels -> stage preprocessed data -> switch (see rounds.py for the layout)

Each step is resumable: per-case results go to the round's work folder as they are made, staged files are written
under temporary names and renamed, and the journal records the step reached. Rerunning the same command after an
interruption continues the round; `restart=True` discards it instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_flare.atomic_io import remove_stale_temporaries, write_image_atomic, write_json_atomic
from nnunetv2_flare.inference.core.settings import CASCADE_MARGIN_MM
from nnunetv2_flare.labels import FLARE_ORGANS
from nnunetv2_flare.pseudolabel import rounds
from nnunetv2_flare.pseudolabel.combine import PAPER_PRIORITY, combine_labels, validate_priority, voxel_changes
from nnunetv2_flare.pseudolabel.dataset_state import DatasetStateError, FlareDataset, check_dataset_consistency
from nnunetv2_flare.pseudolabel.label_versions import check_labels_match_journal, copy_label_file, labels_manifest
from nnunetv2_flare.pseudolabel.organ_prediction import OrganPredictor, predict_case
from nnunetv2_flare.pseudolabel.refresh_preprocessed import stage_preprocessed

# called after each case of a stage ("labels" or "preprocessing"), e.g. by progress UIs or failure-injection tests
CaseHook = Callable[[str, str], None]
# receives each message of a round as it happens (what is continued, warnings), e.g. `print`
MessageHook = Callable[[str], None]


@dataclass
class RoundResult:
    round: int
    report: dict[str, Any]
    dry_run: bool
    finished_interrupted_switch: bool = False
    messages: list[str] = field(default_factory=list)

    @property
    def changed_cases(self) -> list[str]:
        return [c for c, r in self.report["cases"].items() if r["changed"]]


def read_trusted_cases(path: str | Path, file_ending: str = "") -> list[str]:
    """One case id per line; blank lines and '#' comments ignored; a trailing file ending is tolerated."""
    cases = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            cases.append(line[:-len(file_ending)] if file_ending and line.endswith(file_ending) else line)
    return cases


def _organ_name(c: int) -> str:
    return FLARE_ORGANS.get(c, f"label_{c}")


def case_entry(old: np.ndarray, new: np.ndarray, classes: Sequence[int], trusted: bool = False) -> dict[str, Any]:
    changes = voxel_changes(old, new, classes)
    changed_voxels = int(np.count_nonzero(old != new))
    foreground_changed = int(np.count_nonzero((old > 0) != (new > 0))) if changed_voxels else 0
    return {"trusted": trusted, "changed": changed_voxels > 0, "voxels_changed": changed_voxels,
            "foreground_voxels_changed": foreground_changed,
            "per_organ": {_organ_name(c): v for c, v in changes.items()}}


def build_report(dataset: FlareDataset, round_: int, settings: dict[str, Any], cases: dict[str, dict],
                 dry_run: bool) -> dict[str, Any]:
    per_organ: dict[str, dict[str, int]] = {}
    for entry in cases.values():
        for organ, v in entry["per_organ"].items():
            total = per_organ.setdefault(organ, {"gained": 0, "lost": 0})
            total["gained"] += v["gained"]
            total["lost"] += v["lost"]
    return {
        "dataset": dataset.raw.name, "round": round_, "dry_run": dry_run, "settings": settings,
        "totals": {
            "cases": len(cases), "trusted": sum(e["trusted"] for e in cases.values()),
            "changed": sum(e["changed"] for e in cases.values()),
            "voxels_changed": sum(e["voxels_changed"] for e in cases.values()),
            "foreground_changed": sum(bool(e["foreground_voxels_changed"]) for e in cases.values()),
            "per_organ": per_organ,
        },
        "cases": cases,
    }


def format_report(report: dict[str, Any]) -> str:
    t = report["totals"]
    head = "DRY RUN (nothing written): " if report["dry_run"] else ""
    lines = [f"{head}{report['dataset']} round {report['round']}: {t['changed']} of {t['cases']} cases changed "
             f"({t['trusted']} trusted, never modified), {t['voxels_changed']} voxels relabelled",
             f"  {'organ':<22}{'gained':>12}{'lost':>12}"]
    for organ, v in t["per_organ"].items():
        lines.append(f"  {organ:<22}{v['gained']:>12}{v['lost']:>12}")
    changed = [(c, e) for c, e in report["cases"].items() if e["changed"]]
    if changed:
        lines.append("  changed cases (voxels relabelled; largest organ gains / losses):")
    for case, e in changed:
        moves = sorted(((v["gained"] - v["lost"], o, v) for o, v in e["per_organ"].items()
                        if v["gained"] or v["lost"]), key=lambda m: -abs(m[0]))[:3]
        detail = ", ".join(f"{o} +{v['gained']}/-{v['lost']}" for _, o, v in moves)
        lines.append(f"    {case}: {e['voxels_changed']} ({detail})")
    return "\n".join(lines)


def _combine_case(dataset: FlareDataset, case: str, predict_organs: OrganPredictor, priority: Sequence[int],
                  margin_mm: float, classes: Sequence[int]) -> tuple[dict[str, Any], sitk.Image | None]:
    """(report entry, new label image or None when nothing changed)."""
    label_image = sitk.ReadImage(str(dataset.label_file(case)))
    old = sitk.GetArrayFromImage(label_image)
    image = sitk.ReadImage(str(dataset.images[case][0]))
    predicted = predict_case(predict_organs, image, old, margin_mm)
    new = combine_labels(old, predicted, priority)
    entry = case_entry(old, new, classes)
    if not entry["changed"]:
        return entry, None
    new_image = sitk.GetImageFromArray(new)
    new_image.CopyInformation(label_image)
    return entry, new_image


def run_pseudolabel_round(dataset: FlareDataset, predictor_factory: Callable[[], OrganPredictor] | None,
                          settings: dict[str, Any], trusted: Iterable[str] = (),
                          priority: Sequence[int] = PAPER_PRIORITY, margin_mm: float = CASCADE_MARGIN_MM,
                          dry_run: bool = False, restart: bool = False, progress: bool = True,
                          report_file: str | Path | None = None, after_case: CaseHook | None = None,
                          on_message: MessageHook | None = None) -> RoundResult:
    """Make (or finish) one round. `settings` identifies the model (recorded, and compared on resume; a
    'model_digest' equal to the previous pseudo-label round's gives a warning); `predictor_factory` is only called
    when a case needs predicting."""
    priority, trusted = _checked_priority_and_trusted(dataset, priority, trusted)
    settings = {**settings, "priority": list(priority), "margin_mm": float(margin_mm), "trusted": trusted}
    messages = Messages(on_message)
    journal = rounds.load_journal(dataset)
    record = rounds.unfinished_round(journal)
    if record is not None and record["state"] == "switching":
        return finish_interrupted_switch(dataset, journal, record, dry_run, messages)
    record = resumable_record(dataset, journal, record, "pseudolabel", settings, restart, dry_run, messages)
    check_labels_match_journal(dataset, journal)
    check_dataset_consistency(dataset)
    if record is None:
        _warn_if_same_checkpoint(journal, settings, messages)
    k, record = open_round(dataset, journal, record, "pseudolabel", settings, dry_run, messages)
    classes = sorted(set(FLARE_ORGANS) | set(priority))
    entries = _predict_and_combine(dataset, k, predictor_factory, set(trusted), priority, margin_mm, classes,
                                   dry_run, progress, after_case)
    report = build_report(dataset, k, settings, entries, dry_run)
    if report_file is not None:
        write_json_atomic(report, report_file)
    if not dry_run:
        stage_and_switch(dataset, journal, record, entries, report, progress, after_case)
    return RoundResult(k, report, dry_run, messages=messages.lines)


class Messages:
    """A round's messages: passed on as they happen and kept for its result."""

    def __init__(self, on_message: MessageHook | None = None) -> None:
        self.lines: list[str] = []
        self.on_message = on_message

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.on_message is not None:
            self.on_message(line)


def _warn_if_same_checkpoint(journal: dict, settings: dict[str, Any], messages: Messages) -> None:
    made = [r for r in journal["rounds"] if r.get("kind") == "pseudolabel" and r["state"] == "done"]
    digest = settings.get("model_digest")
    if made and digest and made[-1]["settings"].get("model_digest") == digest:
        messages(f"warning: round {made[-1]['round']} was made with this very model (the same plans and checkpoint "
                 f"bytes: {made[-1]['settings']['model']}, {made[-1]['settings'].get('checkpoint')}): it has not been "
                 f"fine-tuned on that round's labels since, so this round can add little. Fine-tune first (the "
                 f"nnUNetv2_train line printed after round {made[-1]['round']}) and pass the new model with -m.")


def _checked_priority_and_trusted(dataset: FlareDataset, priority: Sequence[int],
                                  trusted: Iterable[str]) -> tuple[list[int], list[str]]:
    """The priority list (validated, covering exactly the dataset's labels) and the sorted trusted case ids (all
    known)."""
    priority = validate_priority(priority)
    trusted = sorted(set(trusted))
    unknown = sorted(set(trusted) - set(dataset.cases))
    if unknown:
        raise DatasetStateError(f"trusted case ids not in {dataset.raw / 'imagesTr'}: {unknown[:10]}"
                                f"{' ...' if len(unknown) > 10 else ''} (one case id per line, e.g. "
                                f"{dataset.cases[0]})")
    labels = {int(v) for v in dataset.dataset_json()["labels"].values() if isinstance(v, int) and v > 0}
    if not labels <= set(priority):
        raise DatasetStateError(f"the priority list {list(priority)} misses the dataset's labels "
                                f"{sorted(labels - set(priority))}: every foreground label needs a place in it")
    if not set(priority) <= labels:
        raise DatasetStateError(f"the priority list {list(priority)} names {sorted(set(priority) - labels)}, which "
                                f"the dataset does not have (its labels are {sorted(labels)})")
    return priority, trusted


def finish_interrupted_switch(dataset: FlareDataset, journal: dict, record: dict, dry_run: bool,
                              messages: Messages) -> RoundResult:
    """A round interrupted while switching folders: finish the switch (its labels and data are complete)."""
    k = record["round"]
    report = json.loads(rounds.report_path(dataset, k).read_text())
    if dry_run:
        messages(f"round {k} was interrupted while switching folders; a run without --dry_run finishes it")
        return RoundResult(k, report, True, messages=messages.lines)
    rounds.switch_to_round(dataset, journal, record, record["preprocessed_folders"])
    messages(f"finished round {k}, which was interrupted while switching folders")
    return RoundResult(k, report, False, finished_interrupted_switch=True, messages=messages.lines)


def resumable_record(dataset: FlareDataset, journal: dict, record: dict | None, kind: str, settings: dict[str, Any],
                     restart: bool, dry_run: bool, messages: Messages) -> dict | None:
    """The unfinished round to continue, None to start a new one (`restart` discards an unfinished round); an
    unfinished round started with other settings, or by another command, is refused."""
    if record is not None and restart:
        if dry_run:
            messages(f"a run without --dry_run would discard the unfinished round {record['round']}")
        else:
            messages(f"discarded unfinished round {rounds.discard_unfinished(dataset, journal)}")
        return None
    if record is not None and record.get("kind", "pseudolabel") != kind:
        raise DatasetStateError(
            f"round {record['round']} of {dataset.raw.name} ({rounds.round_title(record)}) is unfinished "
            f"({record['state']}): rerun the command that started it to finish it (see --rounds), or add --restart "
            f"to discard it")
    if record is not None and record["settings"] != settings:
        differing = sorted(k for k in set(settings) | set(record["settings"])
                           if settings.get(k) != record["settings"].get(k))
        raise DatasetStateError(
            f"round {record['round']} of {dataset.raw.name} is unfinished ({record['state']}) and was started with "
            f"other settings ({', '.join(differing)} differ). Rerun with the settings it was started with to "
            f"continue it (see {dataset.journal_path}), or add --restart to discard it and start over.")
    return record


def open_round(dataset: FlareDataset, journal: dict, record: dict | None, kind: str, settings: dict[str, Any],
               dry_run: bool, messages: Messages) -> tuple[int, dict | None]:
    """The round's number and journal record: a new round is recorded as started (not on a dry run), after round 0
    is kept in its own folder."""
    k = record["round"] if record is not None else journal["current_round"] + 1
    if record is None and not dry_run:
        rounds.keep_original_round(dataset, journal)
        record = {"round": k, "kind": kind, "settings": settings}
        journal["rounds"].append(record)
        rounds.set_state(dataset, journal, record, "started")
    elif record is not None:
        staged = rounds.staged_labels_folder(dataset, k)
        done = sum(dataset.label_file(c, staged).is_file() for c in dataset.cases)
        messages(f"continuing round {k} from state '{record['state']}' ({done} of {len(dataset.cases)} cases done "
                 f"before the interruption are kept)")
    return k, record


def _predict_and_combine(dataset: FlareDataset, k: int, predictor_factory: Callable[[], OrganPredictor] | None,
                         trusted: set[str], priority: Sequence[int], margin_mm: float, classes: Sequence[int],
                         dry_run: bool, progress: bool, after_case: CaseHook | None) -> dict[str, dict]:
    """Each case's report entry; its next label staged (unless a dry run). Cases done before an interruption are
    read back; the organ model is loaded at the first case that needs a prediction."""
    staged_labels = rounds.staged_labels_folder(dataset, k)
    work = rounds.work_folder(dataset, k)
    if not dry_run:
        for folder in (staged_labels, work):
            folder.mkdir(exist_ok=True)
            remove_stale_temporaries(folder)
    predictor: OrganPredictor | None = None
    entries: dict[str, dict] = {}
    for case in tqdm(dataset.cases, desc=f"round {k}: predict and combine", disable=not progress):
        record_file = work / f"{case}.json"
        target = dataset.label_file(case, staged_labels)
        if not dry_run and record_file.is_file() and target.is_file():
            entries[case] = json.loads(record_file.read_text())
            continue
        source = dataset.label_file(case)
        if case in trusted:
            entry = {"trusted": True, "changed": False, "voxels_changed": 0, "foreground_voxels_changed": 0,
                     "per_organ": {_organ_name(c): {"gained": 0, "lost": 0} for c in classes}}
            new_image = None
        else:
            if predictor is None:
                if predictor_factory is None:
                    raise RuntimeError("this round needs predictions but no organ model was given (-m)")
                predictor = predictor_factory()
            entry, new_image = _combine_case(dataset, case, predictor, priority, margin_mm, classes)
        if not dry_run:
            if new_image is None:  # trusted or unchanged: the same bytes as before
                copy_label_file(source, target)
            else:
                write_image_atomic(new_image, target)
            write_json_atomic(entry, record_file)
        entries[case] = entry
        if after_case is not None:
            after_case("labels", case)
    return entries


def stage_and_switch(dataset: FlareDataset, journal: dict, record: dict, entries: dict[str, dict],
                     report: dict[str, Any], progress: bool, after_case: CaseHook | None,
                     regenerate: Iterable[str] | None = None) -> None:
    """Record the labels, stage the preprocessed data of the changed cases (or of `regenerate`, when the
    preprocessed data must be remade for other cases too), switch the dataset to the round."""
    k = record["round"]
    changed = [c for c, e in entries.items() if e["changed"]]
    foreground_changed = [c for c, e in entries.items() if e["foreground_voxels_changed"]]
    staged_labels = rounds.staged_labels_folder(dataset, k)
    write_json_atomic(report, rounds.report_path(dataset, k))
    if record["state"] == "started":
        rounds.set_state(dataset, journal, record, "labels_written", changed_cases=changed,
                         foreground_changed_cases=foreground_changed, report=rounds.report_path(dataset, k).name,
                         labels=labels_manifest(dataset, staged_labels))
    if regenerate is not None:
        changed = foreground_changed = sorted(set(regenerate))
    names = stage_preprocessed(dataset, k, changed, staged_labels, foreground_changed,
                               progress, None if after_case is None else lambda case: after_case("preprocessing", case))
    if record["state"] == "labels_written":
        rounds.set_state(dataset, journal, record, "preprocessed", preprocessed_folders=names)
    rounds.switch_to_round(dataset, journal, record, names)
