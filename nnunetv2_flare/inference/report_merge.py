"""Resuming with the same --report: the earlier report's entries are kept, not replaced.

A rerun keeps the label files made for the same request (request_record.py); without this, their entries (volumes, timings, crop box) would vanish
from the report that the rerun writes. Rules:
- every case of the earlier report is kept (also cases outside this run's inputs or part);
- a case this run skips because its output exists keeps its earlier entry's measurements, with this run's status;
- a case this run predicts (or fails) gets this run's entry; "failed" lists only the current failures;
- "settings" are this run's.
An existing file that is not a prediction report is never replaced: the command refuses it before any work
(predict_checks.check_report_path).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

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
