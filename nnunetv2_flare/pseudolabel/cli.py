"""nnUNetv2_flare_pseudolabel: one label-combining round of the paper on an nnU-Net dataset."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from nnunetv2_flare.cli_errors import FlareArgumentParser, UsageError, run_command
from nnunetv2_flare.inference.core.settings import CASCADE_MARGIN_MM
from nnunetv2_flare.inference.models.digests import model_digest
from nnunetv2_flare.names import CHECKPOINT, PLANS
from nnunetv2_flare.pseudolabel.combine import PAPER_PRIORITY
from nnunetv2_flare.pseudolabel.dataset_state import DatasetStateError, FlareDataset
from nnunetv2_flare.pseudolabel.manual_rounds import record_edits, restore_round
from nnunetv2_flare.pseudolabel.model_checks import check_organ_model
from nnunetv2_flare.pseudolabel.organ_prediction import load_organ_predictor
from nnunetv2_flare.pseudolabel.rounds import describe_rounds
from nnunetv2_flare.pseudolabel.run_round import (
    RoundResult,
    format_report,
    read_trusted_cases,
    run_pseudolabel_round,
)

PROG = "nnUNetv2_flare_pseudolabel"


def _dataset_folders(dataset: str) -> tuple[Path, Path]:
    """nnUNet_raw / nnUNet_preprocessed folders of a dataset id or name; a one-line refusal if there is none (nnU-Net's
    own lookup raises a multi-line RuntimeError that lists every folder variable)."""
    missing = [v for v in ("nnUNet_raw", "nnUNet_preprocessed") if not os.environ.get(v)]
    if missing:
        raise UsageError(f"{' and '.join(missing)} not set: export them (nnU-Net's dataset folders) first")
    raw_root = Path(os.environ["nnUNet_raw"])
    if dataset.isdigit():
        matches = sorted(p.name for p in raw_root.glob(f"Dataset{int(dataset):03d}_*") if p.is_dir())
        if len(matches) != 1:
            found = "no dataset" if not matches else f"{len(matches)} datasets ({', '.join(matches)})"
            raise UsageError(f"-d {dataset}: {found} with id {int(dataset)} in nnUNet_raw={raw_root}; give the id "
                             f"or name of one dataset there.")
        name = matches[0]
    elif dataset.startswith("Dataset"):
        name = dataset
    else:
        raise UsageError(f"-d {dataset}: give a dataset id like 220 or a name like Dataset220_FLARE.")
    return raw_root / name, Path(os.environ["nnUNet_preprocessed"]) / name


def fine_tune_commands(dataset_name: str, model: Path, fold: str, checkpoint: str, round_: int) -> str:
    """The commands that fine-tune the organ model on the new round, keeping the model that made it.

    nnUNetv2_train writes into <Trainer>__<Plans>__<configuration>/fold_<f>/ again, replacing checkpoint_final.pth:
    the snapshot keeps the round's model (and its checkpoint for -pretrained_weights) under the standard name."""
    parts = model.name.split("__")
    if len(parts) != 3:
        return ""
    trainer, plans, configuration = parts
    snapshot = f"$nnUNet_results/{dataset_name}/pseudolabel_models/round{round_ - 1}"
    fold_folder = "fold_all" if fold == "all" else f"fold_{fold}"
    return (f"mkdir -p {snapshot} && cp -r {model} {snapshot}/   # keep the model that made round {round_}\n"
            f"nnUNetv2_train {dataset_name} {configuration} {fold} -tr {trainer} -p {plans} "
            f"-pretrained_weights {snapshot}/{model.name}/{fold_folder}/{checkpoint}")


def build_parser() -> argparse.ArgumentParser:
    p = FlareArgumentParser(
        prog=PROG,
        description="One pseudo-label round (paper Algorithm 1): predict every non-trusted training case with the "
                    "organ model (the cascade's Phase 2 on the crop of the case's current label), merge prediction "
                    "and label class by class with a fixed priority, write the result as the next round of "
                    "labelsTr (every round kept as labelsTr_round<k>) and bring the preprocessed data in line "
                    "for the changed cases, without re-planning. Then fine-tune with nnUNetv2_train ... "
                    "-pretrained_weights. Rerun the same command after an interruption to continue. "
                    "--rounds lists the rounds, --restore_round J goes back to one, --record_edits keeps labels "
                    "edited by hand as a round.")
    p.add_argument("-d", required=True, help="dataset name or id (as in nnUNetv2_train)")
    p.add_argument("-m", help="organ model folder (<Trainer>__<Plans>__<configuration> under nnUNet_results); "
                              "required for a pseudo-label round")
    p.add_argument("-f", default="all", help="fold of the organ model (default: all)")
    p.add_argument("-chk", default=CHECKPOINT, help=f"checkpoint file name (default: {CHECKPOINT})")
    p.add_argument("-p", default=PLANS, help=f"plans identifier of the preprocessed data (default: {PLANS})")
    p.add_argument("-device", default="cpu", help="torch device for the predictions: cpu, cuda, mps (default: cpu)")
    p.add_argument("--trusted", help="text file, one case id per line: expert-labelled cases, never modified")
    p.add_argument("--priority", type=int, nargs="+", default=list(PAPER_PRIORITY),
                   help="class ids, highest priority first, that win where label and prediction disagree; every "
                        f"label of the dataset once (default: the paper's {' '.join(map(str, PAPER_PRIORITY))})")
    p.add_argument("--margin_mm", type=float, default=CASCADE_MARGIN_MM,
                   help=f"margin around the label's bounding box for the organ model (default {CASCADE_MARGIN_MM})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores)")
    p.add_argument("--report", help="also write the JSON report here (it is always saved in the raw dataset folder "
                                    "as pseudolabel_round<k>_report.json, except with --dry_run)")
    p.add_argument("--dry_run", action="store_true", help="compute and print everything, write nothing")
    p.add_argument("--restart", action="store_true", help="discard an unfinished round and start it over")
    other = p.add_mutually_exclusive_group()
    other.add_argument("--rounds", action="store_true",
                       help="list the rounds of this dataset, and whether labelsTr holds the current one, and exit")
    other.add_argument("--restore_round", type=int, metavar="J",
                       help="go back to round J: its labels become the next round (labelsTr and the preprocessed "
                            "data follow; later rounds stay recorded)")
    other.add_argument("--record_edits", action="store_true",
                       help="keep labelsTr, edited by hand since the current round, as the next round")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args), usage_errors=(DatasetStateError, FileNotFoundError, ValueError),
                       interrupted="interrupted; rerun the same command to continue the round (finished cases are "
                                   "kept).")


def _run(args: argparse.Namespace) -> int:
    manual = args.restore_round is not None or args.record_edits
    if (args.rounds or manual) and (args.m or args.dry_run or args.trusted):
        flag = "--rounds" if args.rounds else "--restore_round" if args.restore_round is not None else "--record_edits"
        raise UsageError(f"{flag} takes no -m, --trusted or --dry_run (those are for pseudo-label rounds)")
    raw, preprocessed = _dataset_folders(args.d)
    dataset = FlareDataset.open(raw, preprocessed, args.p)
    if args.rounds:
        print(describe_rounds(dataset))
        return 0
    if args.restore_round is not None:
        _print_done(dataset, restore_round(dataset, args.restore_round, restart=args.restart, on_message=print))
        return 0
    if args.record_edits:
        _print_done(dataset, record_edits(dataset, restart=args.restart, on_message=print))
        return 0
    if not args.m:
        raise UsageError("-m ORGAN_MODEL_FOLDER is required (the organ model to predict with)")
    model = Path(args.m).resolve()
    checked = check_organ_model(dataset, model, args.f, args.chk)
    trusted = read_trusted_cases(args.trusted, dataset.file_ending) if args.trusted else []
    settings = {"model": str(model), "fold": str(args.f), "checkpoint": args.chk,
                "model_digest": model_digest(model, checked.checkpoint_files)}
    result = run_pseudolabel_round(
        dataset, lambda: load_organ_predictor(model, args.f, args.chk, args.device, args.threads),
        settings, trusted, args.priority, args.margin_mm, args.dry_run, args.restart, report_file=args.report,
        on_message=print)
    print(format_report(result.report))
    if not result.dry_run:
        print(f"labels of round {result.round} are now in {dataset.labels_folder} and labelsTr_round{result.round} "
              f"(list the rounds with --rounds). Next, fine-tune the organ model on them:")
        print(fine_tune_commands(dataset.raw.name, model, str(args.f), args.chk, result.round))
    return 0


def _print_done(dataset: FlareDataset, result: RoundResult | None) -> None:
    if result is None:
        return
    print(format_report(result.report))
    print(f"labels of round {result.round} are now in {dataset.labels_folder} and labelsTr_round{result.round}, "
          f"the preprocessed data in line with them (list the rounds with --rounds)")


if __name__ == "__main__":
    sys.exit(main())
