"""Everything nnUNetv2_flare_predict checks before it loads a model or writes a byte.

`check_arguments` looks at the parsed arguments only (no disk access; fuzzed in tests/test_command_errors.py);
`check_paths` reads the inputs' listing and the output / report locations, still without writing anything, and
returns the batch's plan (batch/plan.py), on which the batch runs without checking again. Both raise `UsageError`
(exit 2, one line).
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from nnunetv2_flare.errors import UsageError
from nnunetv2_flare.inference.core.settings import MODEL_ORIENTATION

if TYPE_CHECKING:
    from nnunetv2_flare.inference.batch.plan import BatchPlan

DATASET_NAME = re.compile(r"^Dataset\d{3}_\S+$")


def dataset_name_or_id(value: str) -> str:
    """argparse type of -d: an id (220) or a full name (Dataset220_FLARE), as nnUNetv2_predict takes it."""
    if value.isdigit() or DATASET_NAME.match(value):
        return value
    raise argparse.ArgumentTypeError(f"invalid dataset {value!r}: give an id like 220 or a name like "
                                     f"Dataset220_FLARE")


def voxel_count(value: str) -> int:
    """argparse type of --window_voxels: a whole number of voxels > 0, written out or as 1e6 / 2.6e6."""
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not (number > 0 and number == int(number)):  # NaN fails both
        raise argparse.ArgumentTypeError(f"invalid voxel count {value!r}: give a whole number > 0, e.g. 1000000 "
                                         f"or 1e6")
    return int(number)


def orientation_option(value: str) -> str | None:
    """argparse type of --orientation: None (as_read / none: the array as stored), 'model', or a checked code such
    as 'RAS'."""
    if value.lower() in ("as_read", "none"):
        return None
    if value.lower() == MODEL_ORIENTATION:
        return MODEL_ORIENTATION
    from nnunetv2_flare.inference.inputs.orientation import orientation_matrix
    try:
        orientation_matrix(value.upper())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value.upper()


def check_arguments(args: argparse.Namespace) -> None:
    """Contradictions and out-of-range values among the parsed arguments."""
    if args.overwrite and args.continue_prediction:
        raise UsageError("--overwrite and --continue_prediction contradict each other; pick one.")
    for augmentation in ("tta", "shift_tta"):
        if getattr(args, augmentation) and args.disable_tta:
            raise UsageError(f"--{augmentation} and --disable_tta contradict each other; pick one.")
    if args.statistics and not args.report:
        raise UsageError("--statistics goes into the JSON report: add --report report.json.")
    if args.step_size is not None and not 0 < args.step_size <= 1:
        raise UsageError(f"-step_size must be in (0, 1] (a fraction of the patch); got {args.step_size}.")
    if args.margin_mm is not None and not 0 <= args.margin_mm < float("inf"):
        raise UsageError(f"--margin_mm must be a finite number >= 0 (mm); got {args.margin_mm}.")
    if args.follow_organs < 0:
        raise UsageError(f"--follow_organs must be a number of rounds >= 0; got {args.follow_organs}.")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1; got {args.threads}.")
    if bool(args.m1) != bool(args.m2):
        raise UsageError("give both -m1 LOCATOR_FOLDER and -m2 ORGAN_FOLDER (or -d DATASET).")
    if not (args.m1 or args.d):
        raise UsageError("name the models: -d DATASET (with $nnUNet_results set) or -m1 ... -m2 ...")
    if args.report and (not os.path.basename(args.report) or args.report.endswith(os.sep)):
        raise UsageError(f"--report {args.report} names a folder; give a file name such as report.json.")


def check_output_apart_from_inputs(inputs: Sequence[str], output: str) -> None:
    """Outputs among the inputs would be read as cases by the next run (and refused as label maps): refuse -o equal
    to an input folder or file up front."""
    from nnunetv2_flare.inference.batch.report import same_path

    for item in inputs:
        if same_path(item, output):
            kind = "folder" if Path(item).is_dir() else "file"
            raise UsageError(f"-o {output} is the input {kind} itself; the labels would be written among (or over) "
                             f"the CTs. Give a separate output folder, e.g. -o {Path(output).name or 'out'}_labels.")


def check_paths(args: argparse.Namespace) -> BatchPlan:
    """Inputs, output and report fit together (reads listings and headers, writes nothing): the batch's plan, the
    one place these are checked (batch/plan.py), plus what the command refuses beyond the API: an output that is
    an input, or companion files that would land in one."""
    from nnunetv2_flare.inference.batch.plan import plan_batch
    from nnunetv2_flare.inference.batch.safety import OutputFolderError
    from nnunetv2_flare.inference.outputs.case_outputs import OutputOptions, check_outputs_apart_from_inputs

    check_output_apart_from_inputs(args.i, args.o)
    outputs = OutputOptions(split_masks=args.split_masks, preview=args.preview, color_table=args.color_table,
                            output_type=args.output_type)
    try:
        plan = plan_batch(args.i, args.o, outputs, args.report, args.num_parts, args.part_id)
        check_outputs_apart_from_inputs(plan.all_cases, plan.targets, args.o)
    except UsageError:
        raise
    except (FileNotFoundError, ValueError, OutputFolderError) as e:
        raise UsageError(str(e)) from None
    return plan
