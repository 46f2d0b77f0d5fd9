"""Resuming with the same --report: the earlier report's entries are kept, not replaced.

A rerun skips the cases whose labels exist; without this, their entries (volumes, timings, crop box) would vanish
from the report that the rerun writes. Rules:
- every case of the earlier report is kept (also cases outside this run's inputs or part);
- a case this run skips because its output exists keeps its earlier entry's measurements, with this run's status;
- a case this run predicts (or fails) gets this run's entry; "failed" lists only the current failures;
- "settings" are this run's.
An unreadable earlier report (not JSON, another layout) is left out with a warning: it is replaced atomically, so a
broken file is not worth stopping a batch for.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

EARLIER_RUN_KEY = "from_earlier_run"  # marks measurements carried over from the report being resumed


def earlier_report(report: str | os.PathLike | None) -> tuple[dict, str | None]:
    """(earlier report, warning): the report's content if it is one of ours, else ({}, why it was left out)."""
    if not report or not Path(report).is_file():
        return {}, None
    try:
        data = json.loads(Path(report).read_text())
    except (OSError, ValueError) as e:
        return {}, f"the existing report {report} could not be read ({type(e).__name__}); it is replaced"
    if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
        return {}, f"the existing report {report} is not a prediction report; it is replaced"
    return data, None


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
