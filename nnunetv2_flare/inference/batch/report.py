"""The batch's JSON report: where it may be written, and resuming with the same --report.

`check_report_path` refuses a report that cannot be written or would replace a file that is not a prediction report
(an input, an output of this run, any other file), before any work; `prepare_report_folder` creates its folder once
every check passed.

A rerun keeps the label files made for the same request (request_record.py); without the rules below their entries
(volumes, timings, crop box) would vanish from the report that the rerun writes. Rules:
- every case of the earlier report is kept (also cases outside this run's inputs or part);
- a case this run skips because its output exists keeps its earlier entry's measurements, with this run's status;
- a case this run predicts (or fails) gets this run's entry; "failed" lists only the current failures;
- "settings" are this run's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from nnunetv2_flare.atomic_io import refuse_to_replace
from nnunetv2_flare.errors import UsageError
from nnunetv2_flare.inference.outputs.case_outputs import companion_files

if TYPE_CHECKING:
    from nnunetv2_flare.inference.inputs.reading import InputCase

EARLIER_RUN_KEY = "from_earlier_run"  # marks measurements carried over from the report being resumed


def is_prediction_report(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("cases"), dict) and isinstance(data.get("settings"), dict)


def earlier_report(report: str | os.PathLike | None) -> dict:
    """The report being resumed, {} where there is none (check_report_path refused anything else)."""
    if not report or not Path(report).is_file():
        return {}
    try:
        data = json.loads(Path(report).read_text())
    except (OSError, ValueError):
        return {}
    return data if is_prediction_report(data) else {}


def start_report(settings: dict, earlier: dict) -> dict:
    """The report a run starts from: this run's settings, the earlier cases, the earlier failures."""
    cases = {name: dict(entry) for name, entry in earlier.get("cases", {}).items() if isinstance(entry, dict)}
    failed = {name: message for name, message in earlier.get("failed", {}).items() if name in cases}
    return {"settings": settings, "cases": cases, "failed": failed}


def entry_for_case(report: dict, name: str, input_path: str, output_path: str) -> dict:
    """This run's entry of a case (replacing the earlier one in `report`); the earlier failure is forgotten."""
    earlier = report["cases"].get(name)
    report["failed"].pop(name, None)
    entry = {"input": input_path, "output": output_path}
    measured = earlier and (earlier.get("status") == "done" or earlier.get(EARLIER_RUN_KEY))
    if measured and earlier.get("output") == output_path:
        # kept only while it describes the same output file; the status below is this run's
        entry.update({k: v for k, v in earlier.items() if k not in ("input", "output", "status")},
                     **{EARLIER_RUN_KEY: True})
    report["cases"][name] = entry
    return entry


def drop_earlier_measurements(entry: dict) -> None:
    """A case predicted again in this run: nothing of the earlier entry may remain."""
    keep = {"input", "output"}
    for key in [k for k in entry if k not in keep]:
        del entry[key]


def resolved_path(path: str | os.PathLike) -> Path:
    try:
        return Path(path).resolve()
    except OSError:  # a loop of links: compared as written
        return Path(path).absolute()


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return resolved_path(a) == resolved_path(b)


def check_report_path(report: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (),
                      cases: Sequence[InputCase] = (), targets: dict[str, Path] | None = None) -> None:
    """The report must be writable where it was asked for, found out now, not after the whole batch; and it must
    not replace a file this command did not write as a report: an input, an output of this run (a label file or a
    companion of one), or any existing file that is not a prediction report."""
    path = Path(report)
    if path.is_dir():
        raise UsageError(f"--report {report} is a folder; give a file name such as {path / 'report.json'}.")
    parent = path.parent
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise UsageError(f"--report {report}: {existing} is a file, so the report's folder cannot be created; "
                         f"choose another --report path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--report {report}: {existing} is not writable; choose another --report path or fix the "
                         f"permissions.")
    where = resolved_path(path)
    if where in {resolved_path(p) for p in (*inputs, *(c.path for c in cases))}:
        raise UsageError(f"--report {report} is an input of this run; give the report a file of its own, e.g. "
                         f"report.json.")
    for name, target in (targets or {}).items():
        companions = companion_files(target)
        if where in {resolved_path(p) for p in (target, *companions.values())} or \
                resolved_path(companions["s"]) in where.parents:
            raise UsageError(f"--report {report} is an output of this run (the labels of {name} or a file beside "
                             f"them); give the report a file of its own, e.g. report.json.")
    refuse_to_replace(path, is_prediction_report, "--report", "a prediction report")


def prepare_report_folder(report: str | os.PathLike) -> None:
    """Create the report's folder (after every check passed: a refused command leaves nothing behind)."""
    try:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--report {report}: cannot create its folder ({e.strerror}); choose another path.") from None
