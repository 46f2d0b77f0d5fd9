"""Everything nnUNetv2_flare_predict checks before it loads a model or writes a byte.

`check_arguments` looks at the parsed arguments only (no disk access; fuzzed in tests/test_command_errors.py);
`check_paths` reads the inputs' listing and the output / report locations, still without writing anything. Both
raise `UsageError` (exit 2, one line); `prepare_report_folder` creates the report's folder once the checks passed.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from nnunetv2_flare.cli_errors import UsageError
from nnunetv2_flare.names import MODEL_ORIENTATION

if TYPE_CHECKING:
    from nnunetv2_flare.inference.image_io import InputCase

DATASET_NAME = re.compile(r"^Dataset\d{3}_\S+$")


def dataset_name_or_id(value: str) -> str:
    """argparse type of -d: an id (220) or a full name (Dataset220_FLARE), as nnUNetv2_predict takes it."""
    if value.isdigit() or DATASET_NAME.match(value):
        return value
    raise argparse.ArgumentTypeError(f"invalid dataset {value!r}: give an id like 220 or a name like "
                                     f"Dataset220_FLARE")


def check_arguments(args: argparse.Namespace) -> None:
    """Contradictions and out-of-range values among the parsed arguments."""
    from nnunetv2_flare.inference.orientation import orientation_matrix
    from nnunetv2_flare.inference.parts import check_part

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
    if args.orientation.lower() not in ("as_read", "none", MODEL_ORIENTATION):
        try:
            orientation_matrix(args.orientation.upper())
        except ValueError as e:
            raise UsageError(f"--orientation: {e}") from None
    try:
        check_part(args.num_parts, args.part_id)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if bool(args.m1) != bool(args.m2):
        raise UsageError("give both -m1 LOCATOR_FOLDER and -m2 ORGAN_FOLDER (or -d DATASET).")
    if not (args.m1 or args.d):
        raise UsageError("name the models: -d DATASET (with $nnUNet_results set) or -m1 ... -m2 ...")
    if args.report and (not os.path.basename(args.report) or args.report.endswith(os.sep)):
        raise UsageError(f"--report {args.report} names a folder; give a file name such as report.json.")


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).resolve()
    except OSError:  # a loop of links: compared as written
        return Path(path).absolute()


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return _resolved(a) == _resolved(b)


def check_output_apart_from_inputs(inputs: Sequence[str], output: str) -> None:
    """Outputs among the inputs would be read as cases by the next run (and refused as label maps): refuse -o equal
    to an input folder or file up front."""
    for item in inputs:
        if _same_path(item, output):
            kind = "folder" if Path(item).is_dir() else "file"
            raise UsageError(f"-o {output} is the input {kind} itself; the labels would be written among (or over) "
                             f"the CTs. Give a separate output folder, e.g. -o {Path(output).name or 'out'}_labels.")


def check_report_path(report: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (),
                      cases: Sequence[InputCase] = (), targets: dict[str, Path] | None = None) -> None:
    """The report must be writable where it was asked for, found out now, not after the whole batch; and it must
    not replace a file this command did not write as a report: an input, an output of this run (a label file or a
    companion of one), or any existing file that is not a prediction report."""
    from nnunetv2_flare.atomic_io import refuse_to_replace
    from nnunetv2_flare.inference.case_outputs import companion_files
    from nnunetv2_flare.inference.report_merge import is_prediction_report

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
    where = _resolved(path)
    if where in {_resolved(p) for p in (*inputs, *(c.path for c in cases))}:
        raise UsageError(f"--report {report} is an input of this run; give the report a file of its own, e.g. "
                         f"report.json.")
    for name, target in (targets or {}).items():
        companions = companion_files(target)
        if where in {_resolved(p) for p in (target, *companions.values())} or \
                _resolved(companions["s"]) in where.parents:
            raise UsageError(f"--report {report} is an output of this run (the labels of {name} or a file beside "
                             f"them); give the report a file of its own, e.g. report.json.")
    refuse_to_replace(path, is_prediction_report, "--report", "a prediction report")


def prepare_report_folder(report: str | os.PathLike) -> None:
    """Create the report's folder (after every check passed: a refused command leaves nothing behind)."""
    try:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--report {report}: cannot create its folder ({e.strerror}); choose another path.") from None


def check_paths(args: argparse.Namespace) -> None:
    """Inputs, output and report fit together (reads listings and headers of nothing but names; writes nothing)."""
    from nnunetv2_flare.inference.batch_safety import OutputFolderError, check_output_location
    from nnunetv2_flare.inference.case_outputs import OutputOptions, check_request, output_folder_of

    check_output_apart_from_inputs(args.i, args.o)
    try:
        check_output_location(output_folder_of(args.o))
    except OutputFolderError as e:
        raise UsageError(str(e)) from None
    outputs = OutputOptions(split_masks=args.split_masks, preview=args.preview, color_table=args.color_table,
                            output_type=args.output_type)
    try:
        cases, targets = check_request(args.i, args.o, outputs)
    except UsageError:
        raise
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.report:
        check_report_path(args.report, args.i, cases, targets)
