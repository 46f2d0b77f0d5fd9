"""What a batch will do, checked before any model loads and before anything is written.

`plan_batch` holds every check of a batch request that reads no more than listings and headers: the part of the
cases (-num_parts / -part_id), the cases of the inputs, where each one's label file goes, the DICOM-SEG inputs, the
output folder's location and the report's path. `predict_files` (runner.py) and nnUNetv2_flare_predict both call it,
once per request; the batch then runs on the plan without checking again.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from nnunetv2_flare.inference.batch.parts import check_part, select_part
from nnunetv2_flare.inference.batch.report import check_report_path
from nnunetv2_flare.inference.batch.safety import check_output_location
from nnunetv2_flare.inference.inputs.reading import InputCase, list_cases
from nnunetv2_flare.inference.outputs.case_outputs import OutputOptions, names_a_file, output_targets


@dataclass(frozen=True)
class BatchPlan:
    inputs: list[str | os.PathLike]  # as given
    all_cases: list[InputCase]  # every case of the inputs
    cases: list[InputCase]  # the cases of this part, in the order they are predicted
    output_folder: Path
    targets: dict[str, Path]  # case name -> its label file
    named_file: bool  # -o named the label file of a single case
    outputs: OutputOptions
    report: str | os.PathLike | None
    num_parts: int = 1
    part_id: int = 0


def plan_batch(inputs: str | os.PathLike | Iterable[str | os.PathLike], output: str | os.PathLike,
               outputs: OutputOptions | None = None, report: str | os.PathLike | None = None, num_parts: int = 1,
               part_id: int = 0) -> BatchPlan:
    """The checked plan of a batch; ValueError (UsageError), FileNotFoundError or OutputFolderError otherwise,
    each one line."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    outputs = outputs or OutputOptions()
    check_part(num_parts, part_id)
    all_cases = list_cases(inputs)
    output_folder, targets = output_targets(all_cases, output)
    if outputs.output_type == "dicom_seg":
        from nnunetv2_flare.inference.outputs.dicom_seg import check_dicom_inputs
        check_dicom_inputs(all_cases)
    check_output_location(output_folder)
    if report:  # a report that cannot (or must not) be written is found out now, not after the whole batch
        check_report_path(report, inputs, all_cases, targets)
    return BatchPlan(inputs=inputs, all_cases=all_cases, cases=select_part(all_cases, num_parts, part_id),
                     output_folder=output_folder, targets=targets, named_file=names_a_file(output), outputs=outputs,
                     report=report, num_parts=num_parts, part_id=part_id)
