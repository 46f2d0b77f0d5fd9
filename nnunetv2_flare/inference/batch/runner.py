"""Batches of cases through a FlareCascadePredictor (`predictor.predict_files`, the CLI): every case of the inputs
into the output folder, existing outputs kept only where they were made for the same request (request_record.py),
cases claimed against parallel processes, nnU-Net's parts, a failing case recorded while the others go on, and the
JSON report written at the start, after each case and on Ctrl-C."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tqdm import tqdm

from nnunetv2_flare.atomic_io import write_json_atomic
from nnunetv2_flare.inference.batch.plan import BatchPlan, plan_batch
from nnunetv2_flare.inference.batch.report import (
    drop_earlier_measurements,
    earlier_report,
    entry_for_case,
    prepare_report_folder,
    start_report,
)
from nnunetv2_flare.inference.batch.request_record import Decision, Request, decide, input_digests, options_digest
from nnunetv2_flare.inference.batch.safety import (
    claim_case,
    error_summary,
    prepare_output_folder,
    remove_case_temporaries,
)
from nnunetv2_flare.inference.inputs.checks import InputRefused
from nnunetv2_flare.inference.inputs.nifti_transforms import FILE_NOTES, write_label_image
from nnunetv2_flare.inference.inputs.reading import InputCase
from nnunetv2_flare.inference.outputs.case_outputs import (
    OutputOptions,
    companion_files,
    remove_companions,
    write_extras,
)

if TYPE_CHECKING:
    from nnunetv2_flare.inference.core.cascade import Cascade


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    interrupted: bool = False


def predict_files(predictor: Cascade, inputs: str | os.PathLike | Iterable[str | os.PathLike],
                  output_folder: str | os.PathLike, overwrite: bool = False, report: str | os.PathLike | None = None,
                  num_parts: int = 1, part_id: int = 0, outputs: OutputOptions | None = None) -> BatchResult:
    """Predict every case of `inputs` into `output_folder` as <case>.nii.gz, or, for a single case, into the
    file `output_folder` names when it ends like an image (`seg.nii.gz`; case_outputs.py).

    An existing output is kept where it records this request, predicted again or refused otherwise (the rules:
    request_record.decide); `overwrite` predicts every case again. A failing case is recorded and the others go on.
    `report`: a JSON file with each case's stage times, crop box, warnings, organ volumes. `num_parts` / `part_id`:
    only this part of the cases (parts.py: nnU-Net's split, each case in one part). `outputs`: optional files next
    to each label file (split masks, preview, colour table, DICOM-SEG). Every check comes first (plan.py).
    """
    return run_batch(predictor, plan_batch(inputs, output_folder, outputs, report, num_parts, part_id), overwrite)


def run_batch(predictor: Cascade, plan: BatchPlan, overwrite: bool = False) -> BatchResult:
    """The batch of a checked plan: the output and report folders are created, then each case of the plan is kept,
    predicted or refused in turn."""
    outputs, report, cases = plan.outputs, plan.report, plan.cases
    output_folder = prepare_output_folder(plan.output_folder)
    if report:
        prepare_report_folder(report)
    result = BatchResult()
    settings = predictor.settings()
    result.report = start_report({**settings, "num_parts": plan.num_parts, "part_id": plan.part_id},
                                 earlier_report(report))
    # the request's parts common to every case: the models, and the options that change the labels
    models, options = predictor.models_identity, options_digest(
        {k: v for k, v in settings.items() if k not in ("locator", "organs", "threads")})
    write_report(result.report, report)  # every part writes its report, also one that holds no case
    if not cases:
        tqdm.write(f"nnUNetv2_flare_predict: part {plan.part_id} of {plan.num_parts} holds no case "
                   f"({len(plan.all_cases)} case(s) in all, split by sorted name: "
                   f"cases[{plan.part_id}::{plan.num_parts}]).")
    current: dict | None = None
    try:
        for case in tqdm(cases, desc="cases", disable=not predictor.cascade_settings.progress):
            target = plan.targets[case.name]
            current = entry_for_case(result.report, case.name, str(case.path), str(target))
            try:
                wanted = Request(*input_digests(case), models, options, outputs.companion_letters())
            except Exception as e:  # an input that cannot be listed or read fails alone, as in the prediction
                _record_failure(case, e, current, result)
                current = None
                write_report(result.report, report)
                continue
            decision = decide(target, wanted, companion_files(target), overwrite, plan.named_file)
            if decision.action == "predict":
                with claim_case(output_folder, case.name) as claimed:
                    if not claimed:
                        decision = Decision("keep", "skipped: being predicted by another process")
                    else:  # another process may have written it meanwhile
                        decision = decide(target, wanted, companion_files(target), overwrite, plan.named_file)
                        if decision.action == "keep":
                            decision = Decision("keep", "skipped: output exists (written by another process)")
                        elif decision.action == "predict":
                            remove_case_temporaries(output_folder, target.name)
                            drop_earlier_measurements(current)
                            _predict_case(predictor, case, target, current, result, outputs, wanted,
                                          decision.reason)
            if decision.action == "keep":
                current["status"] = decision.reason or \
                    "skipped: output exists (same request; use --overwrite to predict again)"
                result.skipped.append(case.name)
            elif decision.action == "refuse":
                _record_failure(case, InputRefused(decision.reason), current, result)
            current = None
            write_report(result.report, report)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the writers removed their temporaries, claims are released
        result.interrupted = True
        if current is not None and "status" not in current:
            current["status"] = "interrupted: not written (rerun to predict it)"
        write_report(result.report, report)
        raise
    return result


def _predict_case(predictor: Cascade, case: InputCase, target: Path, entry: dict, result: BatchResult,
                  outputs: OutputOptions, request: Request, replaces: str) -> None:
    try:
        started = time.perf_counter()
        case_result = predictor.run(case.path)
        t = time.perf_counter()
        if replaces:
            entry["replaced"] = replaces
            tqdm.write(f"nnUNetv2_flare_predict: {case.name}: replacing {target.name}: {replaces}")
        # the old label file first: from here until the new one is in place the case reads as unfinished, so a
        # stop midway never leaves old labels beside new companions
        target.unlink(missing_ok=True)
        remove_companions(target)
        extras, written = write_extras(case_result, case, target, outputs, predictor.label_names)
        # last: the label file marks a finished case and records its request
        case_result.labels.SetMetaData(FILE_NOTES, replace(request, companions=written).note())
        write_label_image(case_result.labels, target, case_result.nifti_transforms)
        case_result.timings["write"] = time.perf_counter() - t
        case_result.timings["total"] = time.perf_counter() - started
        entry.update(status="done", **case_result.to_report(), **extras)
        result.done.append(case.name)
        for warning in case_result.warnings:
            tqdm.write(f"nnUNetv2_flare_predict: {case.name}: warning: {warning}")
    except Exception as e:  # one bad case must not stop the others
        _record_failure(case, e, entry, result)


def _record_failure(case: InputCase, error: Exception, entry: dict, result: BatchResult) -> None:
    message = error_summary(error)
    kind = "refused" if isinstance(error, InputRefused) else "error"
    entry.update(status="failed", kind=kind, error=message)
    result.failed[case.name] = message
    result.report["failed"][case.name] = message
    tqdm.write(f"nnUNetv2_flare_predict: {case.name} {'refused' if kind == 'refused' else 'failed'}: {message}")


def write_report(data: dict, report: str | os.PathLike | None) -> None:
    if not report:
        return
    try:
        write_json_atomic(data, report)
    except OSError as e:  # a full disk must not turn into a crash of the whole batch
        tqdm.write(f"nnUNetv2_flare_predict: could not write the report {report}: {error_summary(e)}")
