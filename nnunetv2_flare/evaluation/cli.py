"""`nnUNetv2_flare_evaluate -ref REF -pred PRED [-o summary.json] [-l 1 2 3 ...]`: FLARE's DSC / NSD of a folder.

The numbers are those of FLARE's official evaluation script (docs/evaluation.md); where the script has no answer
or silently skips something, the command says so or gives a defined score (DELIBERATE_DIFFERENCES).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from nnunetv2_flare.atomic_io import refuse_to_replace, write_json_atomic
from nnunetv2_flare.cli_errors import FlareArgumentParser, UsageError, run_command
from nnunetv2_flare.evaluation.evaluate_folders import evaluate_folders, format_table
from nnunetv2_flare.labels import FLARE_ORGANS

PROG = "nnUNetv2_flare_evaluate"
DESCRIPTION = (
    "FLARE's per-organ DSC and NSD of predicted label maps against reference label maps, computed as FLARE's "
    "official evaluation script does (FLARE22/23/24): NSD is the surface Dice of Nikolov et al. (surface elements on "
    "voxel corners weighted by their area, distance <= the organ's tolerance), NSD = 0 where DSC < 0.2, aorta / IVC "
    "/ esophagus are scored on the reference's [first, last) labelled slices along the third array axis. The JSON "
    "holds unrounded values; the table rounds to 4 decimals. Files are matched by name.")
DELIBERATE_DIFFERENCES = (
    "Deliberate differences from FLARE's script: a reference without a prediction is scored as an empty prediction "
    "and listed (the script skips it); a prediction without a reference is listed and not scored (the script "
    "crashes); no prediction matching any reference, a prediction whose grid (size, spacing, origin, direction) "
    "differs from the reference's, and a file that is empty, truncated, unreadable or holds values other than "
    "FLARE's labels 0..13 are refused with a one-line error (the script scores what it reads); an aorta / IVC / "
    "esophagus labelled on a single reference slice is scored on that slice (the script crashes on its empty range). "
    "Means are taken over unrounded values (the script rounds each value to 4 decimals).")


def build_parser() -> argparse.ArgumentParser:
    parser = FlareArgumentParser(prog=PROG, description=DESCRIPTION, epilog=DELIBERATE_DIFFERENCES)
    parser.add_argument("-ref", required=True, help="folder with the reference label maps")
    parser.add_argument("-pred", required=True, help="folder with the predicted label maps (same file names)")
    parser.add_argument("-o", default=None,
                        help="summary JSON to write (default: PRED/summary_flare.json); never written over a "
                             "reference, a prediction or any file that is not an earlier summary")
    parser.add_argument("-l", nargs="+", type=int, default=None,
                        help=f"score only these organ ids (for partially labelled references); default all 13: "
                             f"{', '.join(f'{i} {n}' for i, n in FLARE_ORGANS.items())}")
    parser.add_argument("--file_ending", default=".nii.gz", help="file ending of the label maps (default .nii.gz)")
    parser.add_argument("--disable_progress_bar", action="store_true",
                        help="no progress bar (it is shown only on a terminal: in a log file its frames would "
                             "appear as separate bars)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _evaluate(args), usage_errors=(FileNotFoundError, ValueError))


def _check_labels(labels: list[int] | None) -> None:
    unknown = sorted(set(labels or ()) - set(FLARE_ORGANS))
    if unknown:
        raise UsageError(f"-l {' '.join(map(str, unknown))}: not FLARE organ ids; give ids among "
                         f"1..{len(FLARE_ORGANS)}.")


def is_summary(data: object) -> bool:
    return isinstance(data, dict) and "per_case" in data and "mean_DSC" in data


def _check_output(output: Path, folders: Sequence[Path], file_ending: str) -> None:
    """Before the (long) scoring: the summary must have somewhere to go, and must not replace a file this command
    did not write as a summary, nor become a label file of the folders it scores."""
    if output.is_dir():
        raise UsageError(f"-o {output} is a folder; give the summary's file name, e.g. {output / 'summary.json'}.")
    existing = next((p for p in output.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"-o {output}: {existing} is a file, so the summary's folder cannot be created.")
    where = output.resolve()
    if output.name.endswith(file_ending) and any(where.parent == folder.resolve() for folder in folders):
        raise UsageError(f"-o {output} is a label file of the folders being scored ('*{file_ending}' in "
                         f"{output.parent}); give the summary its own name, e.g. summary.json.")
    refuse_to_replace(output, is_summary, "-o", "a summary")


def _evaluate(args: argparse.Namespace) -> None:
    _check_labels(args.l)
    output = Path(args.o) if args.o else Path(args.pred) / "summary_flare.json"
    _check_output(output, [Path(args.ref), Path(args.pred)], args.file_ending)
    # a bar only on a terminal: tqdm's frames in a log file read as a second bar
    progress = not args.disable_progress_bar and sys.stderr.isatty()
    summary = evaluate_folders(args.ref, args.pred, labels=args.l, file_ending=args.file_ending, progress=progress)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(summary, output)
    print(format_table(summary))
    if summary["missing_predictions"]:
        print(f"\n{len(summary['missing_predictions'])} reference case(s) had no prediction and were scored as empty: "
              + ", ".join(summary["missing_predictions"]))
    if summary["unmatched_predictions"]:
        print(f"\n{len(summary['unmatched_predictions'])} prediction(s) had no reference of their name and were not "
              f"scored: " + ", ".join(summary["unmatched_predictions"]))
    print(f"\nsummary written to {output}")


if __name__ == "__main__":
    sys.exit(main())
