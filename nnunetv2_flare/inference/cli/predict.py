"""nnUNetv2_flare_predict: CT in, 13-organ labels out, with the two-phase CPU cascade."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from nnunetv2_flare.cli_errors import EXIT_FAILED_CASES, EXIT_OK, FlareArgumentParser, UsageError, run_command
from nnunetv2_flare.inference.cli.checks import (
    check_arguments,
    check_paths,
    dataset_name_or_id,
    orientation_option,
    voxel_count,
)
from nnunetv2_flare.inference.core.settings import (
    CASCADE_MARGIN_MM,
    FOLLOW_ORGANS_ROUNDS,
    MODEL_ORIENTATION,
    RESTORE_MODES,
    WINDOW_MODES,
)
from nnunetv2_flare.names import (
    CHECKPOINT,
    LOCATOR_CONFIGURATION,
    LOCATOR_TRAINER,
    ORGAN_CONFIGURATION,
    ORGAN_TRAINER,
    PLANS,
)

PROG = "nnUNetv2_flare_predict"


def build_parser() -> argparse.ArgumentParser:
    p = FlareArgumentParser(
        prog=PROG,
        description="Segment the 13 FLARE abdominal organs with the two-phase cascade (locator at 128^3, organ "
                    "network on the crop). Models: -d DATASET (folders under $nnUNet_results) or -m1/-m2.",
    )
    p.add_argument("-i", nargs="+", required=True, metavar="INPUT",
                   help="image file(s) (.nii.gz .nii .mha .nrrd), folder(s) of images, DICOM series folder(s) "
                        "(found at any depth: study/series), or one DICOM file (its whole series)")
    p.add_argument("-o", required=True, metavar="OUTPUT",
                   help="output folder: one <case>.nii.gz (uint8) per case; or, for a single input case, the label "
                        "file itself (e.g. -o seg.nii.gz; .nii.gz .nii .mha .nrrd). An existing label file is kept "
                        "only if it was made for the same request (input bytes, models, options)")
    p.add_argument("-d", metavar="DATASET", type=dataset_name_or_id,
                   help="dataset name or id, e.g. 220; models under $nnUNet_results")
    p.add_argument("-f", nargs="+", default=["all"], metavar="FOLD",
                   help="fold(s): all (default), one fold, or several (e.g. -f 0 1 2 3 4): an ensemble that averages "
                        "the folds' class probabilities per tile in both phases (each extra fold costs one more "
                        "network pass per tile)")
    p.add_argument("-tr1", default=LOCATOR_TRAINER, help=f"locator trainer (default {LOCATOR_TRAINER})")
    p.add_argument("-c1", default=LOCATOR_CONFIGURATION, help=f"locator configuration ({LOCATOR_CONFIGURATION})")
    # nnU-Net's -tr / -c name the one network users change: here the organ network (the locator rarely changes)
    p.add_argument("-tr2", "-tr", dest="tr2", default=ORGAN_TRAINER,
                   help=f"organ trainer (default {ORGAN_TRAINER}); -tr is the same option")
    p.add_argument("-c2", "-c", dest="c2", default=ORGAN_CONFIGURATION,
                   help=f"organ configuration (default {ORGAN_CONFIGURATION}; e.g. flare_organs_narrow); -c is the "
                        f"same option")
    p.add_argument("-p", default=PLANS, help=f"plans identifier (default {PLANS})")
    p.add_argument("-m1", metavar="LOCATOR_FOLDER", help="locator model folder (instead of -d)")
    p.add_argument("-m2", metavar="ORGAN_FOLDER", help="organ model folder (instead of -d)")
    p.add_argument("-chk", default=CHECKPOINT, help=f"checkpoint file name (default {CHECKPOINT})")
    p.add_argument("-device", default="cpu", help="cpu (default), cuda or mps")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"],
                   help="runtime of both networks: auto (default: OpenVINO if installed and on the CPU, else "
                        "PyTorch), torch, or openvino (pip install \"nnunetv2-flare[openvino]\")")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="organ network precision: fp32 (default) or bf16 (OpenVINO on a CPU with native bf16: "
                        "AVX512_BF16 or AMX)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--overwrite", action="store_true",
                   help="predict every case again and replace its output, whatever wrote it")
    p.add_argument("--continue_prediction", action="store_true",
                   help="keep existing outputs made for the same request (the default; accepted for nnU-Net "
                        "compatibility)")
    p.add_argument("--report", metavar="REPORT_JSON",
                   help="write a JSON report: per case stage times, crop box, warnings, organ volumes (mL)")
    p.add_argument("--margin_mm", type=float, default=None,
                   help=f"crop margin around the located abdomen, mm per side (default {CASCADE_MARGIN_MM:g})")
    p.add_argument("--orientation", default=MODEL_ORIENTATION, type=orientation_option, metavar="CODE",
                   help="process every scan in this voxel orientation (e.g. RAS, LPS) and map the labels back; "
                        "default 'model': the orientation the models were trained in (their plans' reader: RAS for "
                        "NibabelIOWithReorient, else LPS); 'as_read' uses the array as stored")
    p.add_argument("-step_size", type=float, default=None, metavar="S",
                   help="tile step as a fraction of the patch, 0 < S <= 1 (nnU-Net's -step_size; nnU-Net uses 0.5): "
                        "smaller means more overlap and more tiles, each voxel labelled by the tile whose centre is "
                        "nearest. Default: the fewest tiles that cover the crop (the paper's setting)")
    p.add_argument("--window", default=WINDOW_MODES[0], choices=list(WINDOW_MODES),
                   help="the organ network's windows: 'tiles' of its training patch (the paper's 96^3 sliding "
                        "window), 'fitted' to the crop (one window over the whole crop where it fits the window "
                        "range the model was trained on, else the fewest near-equal windows: fewer voxels "
                        "computed), or 'auto' (default): fitted for models trained for any window "
                        "(nnUNetTrainerFlareOrgansAnyWindow, recorded in the checkpoint), tiles otherwise")
    p.add_argument("--window_voxels", type=voxel_count, default=None, metavar="N",
                   help="the most voxels in one fitted window (e.g. 1e6): the crop is split into more, smaller "
                        "windows, for less memory and time (most on PyTorch) but less context and accuracy "
                        "(docs/performance.md). Default: the model's trained range (one nominal batch's voxels), "
                        "the same on every runtime. Ignored with tiles")
    p.add_argument("--restore", default=RESTORE_MODES[0], choices=list(RESTORE_MODES),
                   help="how the organ labels return from the network's spacing to the scan's grid: 'nearest' "
                        "(the labels, the paper's way; default, fastest) or 'linear' (the class scores interpolated "
                        "where organs meet and the argmax taken, nnU-Net's way: smoother, more exact boundaries, "
                        "above all where the scan is much finer than the network's spacing; slower, see "
                        "docs/prediction.md)")
    p.add_argument("--follow_organs", type=int, nargs="?", const=FOLLOW_ORGANS_ROUNDS, default=0, metavar="ROUNDS",
                   help="where the organ labels reach a face of the locator's box (not the scan's edge), grow the "
                        "box there by half a patch and segment the new slab, keeping what the box held; up to ROUNDS "
                        f"times ({FOLLOW_ORGANS_ROUNDS} if no number is given; default off). For scans where the "
                        "locator cuts an organ, e.g. the aorta's thoracic end: costs tiles only where it grows")
    p.add_argument("--disable_tta", action="store_true",
                   help="accepted for nnU-Net compatibility: test-time augmentation is already off by default here")
    p.add_argument("--tta", action="store_true",
                   help="opt in to nnU-Net's mirroring TTA (8 passes per tile and fold, probabilities averaged; "
                        "~8x slower)")
    p.add_argument("--shift_tta", action="store_true",
                   help="opt in to averaging the organ network over its 8 sampling phases: every tile also shifted "
                        "by one voxel along each combination of axes (8 passes per tile, probabilities averaged; "
                        "~8x the organ network's time). Its stride-2 stem reads every other voxel; see "
                        "docs/prediction.md")
    p.add_argument("-num_parts", type=int, default=1,
                   help="split the cases into this many parts, one per job (nnU-Net's rule: sorted names, every "
                        "num_parts-th case); default 1")
    p.add_argument("-part_id", type=int, default=0,
                   help="which part this job predicts, 0..num_parts-1 (e.g. $SLURM_ARRAY_TASK_ID); default 0")
    outputs = p.add_argument_group("outputs beyond the label file (TotalSegmentator's options)")
    outputs.add_argument("--roi_subset", nargs="+", metavar="ORGAN",
                         help="keep only these organs, by name as in the model's dataset.json (e.g. liver spleen); "
                              "the others are written as background")
    outputs.add_argument("--split_masks", action="store_true",
                         help="also write one 0/1 mask per organ: <case>/<organ>.nii.gz next to <case>.nii.gz")
    outputs.add_argument("--statistics", action="store_true",
                         help="per organ volume (mL) and HU inside it (mean, std, percentiles 5 25 50 75 95) in "
                              "the --report JSON")
    outputs.add_argument("--preview", action="store_true",
                         help="a PNG per case next to its labels: axial, coronal and sagittal slices through the "
                              "organs with a colour overlay and legend")
    outputs.add_argument("--color_table", action="store_true",
                         help="a 3D Slicer colour table <case>.ctbl with the model's label names next to the labels")
    outputs.add_argument("--output_type", default="nifti", choices=["nifti", "dicom_seg"],
                         help="dicom_seg: DICOM input only; also write <case>.dcm, a DICOM Segmentation referencing "
                              "the source series (organ names, SNOMED CT codes; needs pip install "
                              "\"nnunetv2-flare[dicom]\")")
    p.add_argument("--disable_progress_bar", action="store_true")
    return p


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed and checked arguments (no disk access): argparse's errors and `UsageError` are one line each."""
    args = build_parser().parse_args(argv)
    check_arguments(args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args: list[argparse.Namespace] = []  # filled once parsed: the Ctrl-C message names the output folder

    def body() -> int:
        args.append(parse_arguments(argv))
        return _predict(args[0])

    def interrupted() -> str:
        where = f" in {args[0].o}" if args else ""
        return (f"interrupted. Finished outputs{where} are complete and nothing half-written was left; run the same "
                f"command again to predict the rest (finished cases are kept).")

    # FileNotFoundError (models, checkpoints) and RuntimeError (nnUNet_results unset, output folder, backend) are
    # the library's one-line refusals; ValueError is mapped inside _predict
    return run_command(PROG, body, usage_errors=(FileNotFoundError, RuntimeError), interrupted=interrupted)


def _predict(args: argparse.Namespace) -> int:
    """Checks on the paths, models, folders, then the batch; every refusal before the first case."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's multi-line warnings; our checks say it in one line
    plan = check_paths(args)
    from nnunetv2_flare.inference.batch.runner import run_batch
    from nnunetv2_flare.inference.batch.safety import sigterm_as_interrupt
    from nnunetv2_flare.inference.core.settings import CascadeSettings, ModelSettings
    from nnunetv2_flare.inference.models.loading import resolve_model_folders
    from nnunetv2_flare.inference.predictor import FlareCascadePredictor

    models = ModelSettings(fold=args.f, checkpoint_name=args.chk, device=args.device, threads=args.threads,
                           backend=args.backend, precision=args.precision, tta=args.tta, shift_tta=args.shift_tta)
    settings = CascadeSettings(
        margin_mm=CASCADE_MARGIN_MM if args.margin_mm is None else args.margin_mm,
        tile_min_overlap=0.0 if args.step_size is None else 1.0 - args.step_size, orientation=args.orientation,
        roi_subset=args.roi_subset, statistics=args.statistics, restore=args.restore,
        follow_organs=args.follow_organs, window=args.window, window_voxels=args.window_voxels,
        progress=not args.disable_progress_bar)
    if args.m1:
        locator, organs = args.m1, args.m2
    else:
        locator, organs = resolve_model_folders(args.d, args.tr1, args.c1, args.tr2, args.c2, args.p)
    try:
        with sigterm_as_interrupt():
            predictor = FlareCascadePredictor.from_folders(locator, organs, models, settings)
            # folders only now (run_batch makes them): a refused command (bad models, folds, device) leaves nothing
            result = run_batch(predictor, plan, overwrite=args.overwrite)
    except ValueError as e:  # the predictor's own checks (folds, precision, roi names) are misuse too
        raise UsageError(str(e)) from None
    print(f"{PROG}: {len(result.done)} predicted, {len(result.skipped)} kept (same request), "
          f"{len(result.failed)} failed -> {args.o}")
    for name, error in result.failed.items():
        print(f"  FAILED {name}: {error}", file=sys.stderr)
    return EXIT_FAILED_CASES if result.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
