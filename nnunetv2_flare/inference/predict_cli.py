"""nnUNetv2_flare_predict: CT in, 13-organ labels out, with the two-phase CPU cascade."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from nnunetv2_flare.inference.defaults import (CHECKPOINT, LOCATOR_CONFIGURATION, LOCATOR_TRAINER,
                                               ORGAN_CONFIGURATION, ORGAN_TRAINER, PLANS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nnUNetv2_flare_predict",
        description="Segment the 13 FLARE abdominal organs with the two-phase cascade (locator at 128^3, organ "
                    "network on the crop). Models: -d DATASET (folders under $nnUNet_results) or -m1/-m2.",
        allow_abbrev=False)  # a prefix must never be read as another option: -part_id is not -p art_id
    p.add_argument("-i", nargs="+", required=True, metavar="INPUT",
                   help="image file(s) (.nii.gz .nii .mha .nrrd), folder(s) of images, DICOM series folder(s) "
                        "(found at any depth: study/series), or one DICOM file (its whole series)")
    p.add_argument("-o", required=True, metavar="OUTPUT",
                   help="output folder: one <case>.nii.gz (uint8) per case; or, for a single input case, the label "
                        "file itself (e.g. -o seg.nii.gz; .nii.gz .nii .mha .nrrd)")
    p.add_argument("-d", metavar="DATASET", help="dataset name or id, e.g. 220; models under $nnUNet_results")
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
    p.add_argument("--overwrite", action="store_true", help="predict cases whose output already exists")
    p.add_argument("--continue_prediction", action="store_true",
                   help="keep existing outputs (the default; accepted for nnU-Net compatibility)")
    p.add_argument("--report", metavar="REPORT_JSON",
                   help="write a JSON report: per case stage times, crop box, warnings, organ volumes (mL)")
    p.add_argument("--margin_mm", type=float, default=None, help="crop margin around the located abdomen (15)")
    p.add_argument("--orientation", default="LPS", metavar="CODE",
                   help="process every scan in this voxel orientation (LPS default, e.g. RAS; the models' training "
                        "orientation) and map the labels back; 'as_read' uses the array as stored")
    p.add_argument("-step_size", type=float, default=None, metavar="S",
                   help="tile step as a fraction of the patch, 0 < S <= 1 (nnU-Net's -step_size; nnU-Net uses 0.5): "
                        "smaller means more overlap and more tiles, each voxel labelled by the tile whose centre is "
                        "nearest. Default: the fewest tiles that cover the crop (the paper's setting)")
    p.add_argument("--disable_tta", action="store_true",
                   help="accepted for nnU-Net compatibility: test-time augmentation is already off by default here")
    p.add_argument("--tta", action="store_true",
                   help="opt in to nnU-Net's mirroring TTA (8 passes per tile and fold, probabilities averaged; "
                        "~8x slower)")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.overwrite and args.continue_prediction:
        print("nnUNetv2_flare_predict: --overwrite and --continue_prediction contradict each other; pick one.",
              file=sys.stderr)
        return 2
    from nnunetv2_flare.inference.cascade import FlareCascadePredictor
    from nnunetv2_flare.inference.model_loading import resolve_model_folders

    import SimpleITK as sitk
    from nnunetv2_flare.inference.batch_safety import prepare_output_folder, sigterm_as_interrupt
    from nnunetv2_flare.inference.orientation import orientation_matrix
    from nnunetv2_flare.inference.case_outputs import OutputOptions, check_request, output_folder_of
    from nnunetv2_flare.inference.parts import check_part

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's multi-line warnings; our checks say it in one line
    orientation = None if args.orientation.lower() in ("as_read", "none") else args.orientation.upper()
    try:
        if orientation:
            orientation_matrix(orientation)
    except ValueError as e:
        print(f"nnUNetv2_flare_predict: --orientation: {e}", file=sys.stderr)
        return 2
    if args.statistics and not args.report:
        print("nnUNetv2_flare_predict: --statistics goes into the JSON report: add --report report.json.",
              file=sys.stderr)
        return 2
    if args.tta and args.disable_tta:
        print("nnUNetv2_flare_predict: --tta and --disable_tta contradict each other; pick one.", file=sys.stderr)
        return 2
    if args.step_size is not None and not 0 < args.step_size <= 1:
        print(f"nnUNetv2_flare_predict: -step_size must be in (0, 1] (a fraction of the patch); got "
              f"{args.step_size}.", file=sys.stderr)
        return 2
    options = {"progress": not args.disable_progress_bar, "orientation": orientation}
    if args.step_size is not None:
        options["tile_min_overlap"] = 1.0 - args.step_size
    if args.roi_subset:
        options["roi_subset"] = args.roi_subset
    if args.statistics:
        options["statistics"] = True
    if args.margin_mm is not None:
        options["margin_mm"] = args.margin_mm
    try:
        check_part(args.num_parts, args.part_id)
        outputs = OutputOptions(split_masks=args.split_masks, preview=args.preview, color_table=args.color_table,
                                output_type=args.output_type)
        check_request(args.i, args.o, outputs)
        if args.m1 or args.m2:
            if not (args.m1 and args.m2):
                raise ValueError("give both -m1 LOCATOR_FOLDER and -m2 ORGAN_FOLDER (or -d DATASET).")
            locator, organs = args.m1, args.m2
        elif args.d:
            locator, organs = resolve_model_folders(args.d, args.tr1, args.c1, args.tr2, args.c2, args.p)
        else:
            raise ValueError("name the models: -d DATASET (with $nnUNet_results set) or -m1 ... -m2 ...")
        prepare_output_folder(output_folder_of(args.o))  # a bad -o fails in one line before the models load
        with sigterm_as_interrupt():
            predictor = FlareCascadePredictor(locator, organs, fold=args.f, checkpoint_name=args.chk,
                                              device=args.device, threads=args.threads, backend=args.backend,
                                              precision=args.precision, tta=args.tta, **options)
            result = predictor.predict_files(args.i, args.o, overwrite=args.overwrite, report=args.report,
                                             num_parts=args.num_parts, part_id=args.part_id, outputs=outputs)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"nnUNetv2_flare_predict: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nnUNetv2_flare_predict: interrupted. Finished outputs in {args.o} are complete and nothing "
              f"half-written was left; run the same command again to predict the rest (finished cases are "
              f"skipped).", file=sys.stderr)
        return 130
    print(f"nnUNetv2_flare_predict: {len(result.done)} predicted, {len(result.skipped)} kept (output existed), "
          f"{len(result.failed)} failed -> {args.o}")
    for name, error in result.failed.items():
        print(f"  FAILED {name}: {error}", file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
