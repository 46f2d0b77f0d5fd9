"""Batches of cases through a FlareCascadePredictor (`predictor.predict_files`, the CLI): every case of the inputs
into the output folder, existing outputs kept, cases claimed against parallel processes, nnU-Net's parts, a failing
case recorded while the others go on, and the JSON report written after each case and on Ctrl-C."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tqdm import tqdm

from nnunetv2_flare.atomic_io import write_image_atomic, write_json_atomic
from nnunetv2_flare.inference.batch_safety import claim_case, one_line, prepare_output_folder, remove_case_temporaries
from nnunetv2_flare.inference.case_outputs import OutputOptions, output_targets, write_extras
from nnunetv2_flare.inference.image_io import list_cases
from nnunetv2_flare.inference.input_checks import InputRefused
from nnunetv2_flare.inference.parts import select_part
from nnunetv2_flare.inference.predict_checks import check_report_path, prepare_report_folder
from nnunetv2_flare.inference.report_merge import (
    drop_earlier_measurements,
    earlier_report,
    entry_for_case,
    start_report,
)

if TYPE_CHECKING:
    from nnunetv2_flare.inference.cascade import FlareCascadePredictor


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    interrupted: bool = False


def predict_files(predictor: FlareCascadePredictor, inputs: str | os.PathLike | Iterable[str | os.PathLike],
                  output_folder: str | os.PathLike, overwrite: bool = False, report: str | os.PathLike | None = None,
                  num_parts: int = 1, part_id: int = 0, outputs: OutputOptions | None = None) -> BatchResult:
    """Predict every case of `inputs` into `output_folder` as <case>.nii.gz, or, for a single case, into the
    file `output_folder` names when it ends like an image (`seg.nii.gz`; case_outputs.py).

    Existing outputs are kept unless `overwrite` (nnU-Net's --continue_prediction). A failing case is recorded
    and the others go on. `report`: a JSON file with each case's stage times, crop box, warnings, organ volumes.
    `num_parts` / `part_id`: only this part of the cases (parts.py: nnU-Net's split, each case in one part).
    `outputs`: optional files next to each label file (split masks, preview, colour table, DICOM-SEG).
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    outputs = outputs or OutputOptions()
    all_cases = list_cases(inputs)
    output_folder, targets = output_targets(all_cases, output_folder)
    if outputs.output_type == "dicom_seg":
        from nnunetv2_flare.inference.dicom_seg import check_dicom_inputs
        check_dicom_inputs(all_cases)
    cases = select_part(all_cases, num_parts, part_id)
    if report:  # a report that cannot be written is found out now, not after the whole batch
        check_report_path(report)
    output_folder = prepare_output_folder(output_folder)  # one-line error before any work
    if report:
        prepare_report_folder(report)
    result = BatchResult()
    earlier, problem = earlier_report(report)  # resuming: the skipped cases keep their entries
    if problem:
        tqdm.write(f"nnUNetv2_flare_predict: warning: {problem}")
    result.report = start_report({**predictor.settings(), "num_parts": num_parts, "part_id": part_id}, earlier)
    current: dict | None = None
    try:
        for case in tqdm(cases, desc="cases", disable=not predictor.progress):
            target = targets[case.name]
            current = entry_for_case(result.report, case.name, str(case.path), str(target))
            if target.exists() and not overwrite:
                current["status"] = "skipped: output exists (use --overwrite to predict again)"
                result.skipped.append(case.name)
            else:
                with claim_case(output_folder, case.name) as claimed:
                    if not claimed:
                        current["status"] = "skipped: being predicted by another process"
                        result.skipped.append(case.name)
                    elif target.exists() and not overwrite:  # finished by another process meanwhile
                        current["status"] = "skipped: output exists (written by another process)"
                        result.skipped.append(case.name)
                    else:
                        remove_case_temporaries(output_folder, target.name)
                        drop_earlier_measurements(current)
                        _predict_case(predictor, case, target, current, result, outputs)
            current = None
            write_report(result.report, report)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the writers removed their temporaries, claims are released
        result.interrupted = True
        if current is not None and "status" not in current:
            current["status"] = "interrupted: not written (rerun to predict it)"
        write_report(result.report, report)
        raise
    return result

def _predict_case(predictor: FlareCascadePredictor, case, target: Path, entry: dict, result: BatchResult,
                  outputs: OutputOptions) -> None:
    try:
        started = time.perf_counter()
        case_result = predictor.run(case.path)
        t = time.perf_counter()
        extras = write_extras(case_result, case, target, outputs, predictor.label_names)
        write_image_atomic(case_result.labels, target)  # last: the label file marks a finished case
        case_result.timings["write"] = time.perf_counter() - t
        case_result.timings["total"] = time.perf_counter() - started
        entry.update(status="done", **case_result.to_report(), **extras)
        result.done.append(case.name)
        for warning in case_result.warnings:
            tqdm.write(f"nnUNetv2_flare_predict: {case.name}: warning: {warning}")
    except Exception as e:  # one bad case must not stop the others
        message = one_line(e)
        kind = "refused" if isinstance(e, InputRefused) else "error"
        entry.update(status="failed", kind=kind, error=message)
        result.failed[case.name] = message
        result.report["failed"][case.name] = message
        tqdm.write(f"nnUNetv2_flare_predict: {case.name} {'refused' if kind == 'refused' else 'failed'}: "
                   f"{message}")

def write_report(data: dict, report: str | os.PathLike | None) -> None:
    if not report:
        return
    try:
        write_json_atomic(data, report)
    except OSError as e:  # a full disk must not turn into a crash of the whole batch
        tqdm.write(f"nnUNetv2_flare_predict: could not write the report {report}: {one_line(e)}")
