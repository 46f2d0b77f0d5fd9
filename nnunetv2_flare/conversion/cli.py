"""`nnUNetv2_flare_convert -i RELEASE -d ID [-o FOLDER] [--pseudo_labels aladdin5|blackbean|FOLDER|none] [--link]`"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from nnunetv2_flare.cli_errors import FlareArgumentParser, UsageError, run_command
from nnunetv2_flare.conversion.case_matching import MATCH_RULES
from nnunetv2_flare.conversion.convert import DEFECTS, REPORT, ConversionResult, convert_flare_release
from nnunetv2_flare.conversion.layouts import (
    DEFAULT_FLARE24_PSEUDO_LABELS,
    FLARE24_PSEUDO_LABELS,
    LAYOUTS,
    NO_PSEUDO_LABELS,
)

PROG = "nnUNetv2_flare_convert"


def build_parser() -> argparse.ArgumentParser:
    p = FlareArgumentParser(
        prog=PROG,
        description="Convert a FLARE release (" + ", ".join(LAYOUTS) + ", recognised by its folders) into one "
                    "nnU-Net raw dataset: the labelled and pseudo-labelled cases in imagesTr/labelsTr, the "
                    "validation cases with labels in imagesTs/labelsTs, dataset.json, trusted_cases.txt (the "
                    f"labelled cases) and {REPORT} (every case's source and how its label was matched). The "
                    "release is only read. Rerun the same command after an interruption to continue.")
    p.add_argument("-i", required=True, metavar="RELEASE",
                   help="the release's top folder (e.g. FLARE-Task2-LaptopSeg, with train_gt_label/ inside)")
    p.add_argument("-d", type=int, required=True, help="dataset id, e.g. 220 -> Dataset220_FLARE24")
    p.add_argument("-o", default=None, metavar="FOLDER", help="where the dataset folder goes (default: $nnUNet_raw)")
    p.add_argument("--name", default=None,
                   help="dataset name after the id (default: the release's, FLARE24 / FLARE22 / FLARE23)")
    p.add_argument("--pseudo_labels", nargs="+", default=None, metavar="SOURCE",
                   help=f"labels of the pseudo-labelled set: for FLARE24 Task 2 {' or '.join(FLARE24_PSEUDO_LABELS)} "
                        f"(default {DEFAULT_FLARE24_PSEUDO_LABELS}, the FLARE22 winner's, as in the paper); for any "
                        f"release one or more folders of label files (FLARE22's unlabelled cases have none of "
                        f"their own, FLARE23 needs 13-organ labels); {NO_PSEUDO_LABELS}: leave the set out")
    p.add_argument("--link", action="store_true",
                   help="symbolic links to the release's files instead of copies (saves the disk space; the "
                        "release must stay where it is)")
    p.add_argument("-np", type=int, default=4, help="files copied at a time (default 4)")
    p.add_argument("--dry_run", action="store_true", help="recognise, match and check; print the counts, write nothing")
    p.add_argument("--disable_progress_bar", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _convert(args),
                       interrupted="interrupted; every file written is complete: rerun the same command to continue")


def summary_lines(result: ConversionResult) -> list[str]:
    plan = result.plan
    lines = [f"{plan.layout.name} release in {plan.layout.root} (pseudo-labels: {plan.layout.pseudo_labels})",
             f"  {'set':<16}{'images':>8}{'converted':>11}{'labelled':>10}   labels matched by "
             f"{' / '.join(MATCH_RULES)}{'left out':>10}{'unused labels':>15}"]
    for name, c in plan.counts().items():
        matched = " / ".join(str(c["matched_by"][rule]) for rule in MATCH_RULES)
        lines.append(f"  {name:<16}{c['images']:>8}{c['converted']:>11}{c['with_label']:>10}   {matched:<47}"
                     f"{c['left_out']:>10}{c['unmatched_labels']:>15}")
    lines += [f"  not converted: {note}" for note in plan.layout.not_converted]
    lines += [f"  left out: {e['image']}: {e['reason']}" for e in plan.left_out[:10]]
    lines += [f"  unused label: {e['label']}" for e in plan.unmatched_labels[:10]]
    lines += [f"  warning: {w}" for w in plan.warnings[:10]]
    return lines


def _convert(args: argparse.Namespace) -> int:
    if args.np < 1:
        raise UsageError(f"-np must be at least 1; got {args.np}.")
    result = convert_flare_release(args.i, args.d, args.o, args.name, args.pseudo_labels, args.link, args.np,
                                   progress=not args.disable_progress_bar, dry_run=args.dry_run)
    print("\n".join(summary_lines(result)))
    plan = result.plan
    where = f"{result.folder}: {plan.num_training} training cases, {len(plan.cases) - plan.num_training} validation"
    if args.dry_run:
        print(f"dry run: would write {where}; nothing written")
        return 0
    if result.failed:
        for case, error in result.failed.items():
            print(f"  FAILED {case}: {error}", file=sys.stderr)
        print(f"{len(result.failed)} case(s) failed; the dataset is unfinished (no dataset.json): fix the cause and "
              f"rerun the same command", file=sys.stderr)
        return 1
    print(f"-> {where} ({result.written} files written, {result.kept} already in place); report: "
          f"{result.folder / REPORT}")
    print(f"next: nnUNetv2_flare_plan_and_preprocess -d {args.d}")
    defective = [e for e in plan.left_out if e["reason"].startswith(DEFECTS)]
    return 1 if defective else 0


if __name__ == "__main__":
    sys.exit(main())
