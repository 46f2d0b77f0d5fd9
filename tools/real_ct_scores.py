"""Phantom-trained models on real CT: predict the real scans of ../shared/data/real and score them (FLARE's metric).

    python tools/real_ct_scores.py --demo flare_demo            # the demo's models and its prediction options
    python tools/real_ct_scores.py -m1 LOCATOR -m2 ORGANS --restore linear --follow_organs 3 --shift_tta

Cases and references (../shared/data/real/SOURCES.md):
- 3D-IRCADb-01 patient 1, 512 x 512 x 129: manual labels of 6 organs (liver, kidneys, spleen, aorta, IVC; the codes of
  3Dircadb0101Labeled.nii.gz mapped to FLARE's ids as SOURCES.md gives them); only those 6 are scored;
- the TotalSegmentator example CT, 3 mm, 112 slices: TotalSegmentator's own output mapped to FLARE's ids
  (example_seg_fast_force_split_flare13), the 12 organs it holds (no esophagus): agreement with TotalSegmentator,
  not accuracy.
Prints one row per case (DSC per scored organ and their mean) and writes OUT/real_ct_scores.json, which also says
where each organ's voxels went (missed, mislabelled as which organ, misplaced; --explain prints it). The scans are
read where they are and never copied; predictions go to OUT.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
# 3D-IRCADb's label codes -> FLARE ids (SOURCES.md: liver with its tumours and vessels, kidneys, spleen, the
# "artery" mask as the aorta and the "venous system" as the IVC); every other code is background
IRCADB_TO_FLARE = {449: 1, 451: 1, 453: 1, 465: 1, 481: 1, 193: 2, 385: 3, 513: 5, 33: 6, 129: 13}


@dataclass(frozen=True)
class RealCase:
    name: str
    image: Path
    reference: Path
    organs: tuple[int, ...]  # the FLARE ids the reference labels (only these are scored)
    code_map: dict[int, int] | None = None  # reference values -> FLARE ids; None: already FLARE ids
    kind: str = ""


def real_cases(root: Path = REAL) -> list[RealCase]:
    return [
        RealCase("3dircadb_patient1", root / "3dircadb" / "3Dircadb1.1_PATIENT_DICOM.nii.gz",
                 root / "3dircadb" / "3Dircadb0101Labeled.nii.gz", (1, 2, 3, 5, 6, 13), IRCADB_TO_FLARE,
                 "manual labels"),
        RealCase("totalsegmentator_example_ct", root / "totalsegmentator" / "example_ct.nii.gz",
                 root / "totalsegmentator" / "example_seg_fast_force_split_flare13.nii.gz",
                 (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13), None, "TotalSegmentator's output"),
    ]


def flare_reference(case: RealCase) -> sitk.Image:
    """The reference as FLARE ids (3D-IRCADb's codes mapped), on its own grid."""
    image = sitk.ReadImage(str(case.reference))
    if case.code_map is None:
        return sitk.Cast(image, sitk.sitkUInt8)
    codes = sitk.GetArrayFromImage(image)
    mapped = np.zeros(codes.shape, np.uint8)
    for code, organ in case.code_map.items():
        mapped[codes == code] = organ
    out = sitk.GetImageFromArray(mapped)
    out.CopyInformation(image)
    return out


def score(reference: sitk.Image, prediction: sitk.Image, organs: Sequence[int]) -> dict:
    """FLARE's DSC and NSD of the given organs (evaluation.metrics; the prediction on the reference's grid)."""
    from nnunetv2_flare.evaluation.evaluate_folders import flare_array_and_spacing
    from nnunetv2_flare.evaluation.metrics import evaluate_case
    ref, spacing = flare_array_and_spacing(reference)
    pred, _ = flare_array_and_spacing(prediction)
    return evaluate_case(ref, pred, spacing, labels=organs)


def where_organs_went(reference: sitk.Image, prediction: sitk.Image, organs: Sequence[int]) -> dict:
    """Per reference organ: the shares of its voxels predicted as each label (0: missed), the share of the voxels
    predicted as it that are it (precision), and how far the predicted organ's centroid sits from the reference's
    (mm, x y z): missed, mislabelled or misplaced."""
    ref = sitk.GetArrayViewFromImage(reference)
    pred = sitk.GetArrayViewFromImage(prediction)
    rows = {}
    for organ in organs:
        inside = ref == organ
        if not inside.any():
            continue
        labels, counts = np.unique(pred[inside], return_counts=True)
        predicted = pred == organ
        offset = precision = None
        if predicted.any():
            centroids = [np.array(reference.TransformContinuousIndexToPhysicalPoint(
                tuple(float(i) for i in np.argwhere(mask).mean(axis=0)[::-1]))) for mask in (predicted, inside)]
            offset = [round(float(d), 1) for d in centroids[0] - centroids[1]]
            precision = round(float((ref[predicted] == organ).mean()), 3)
        rows[organ] = {"predicted_as": {int(k): round(float(c) / counts.sum(), 3) for k, c in
                                        sorted(zip(labels, counts), key=lambda kc: -kc[1])},
                       "precision": precision, "centroid_offset_mm_xyz": offset}
    return rows


def explain(rows: dict) -> str:
    from nnunetv2_flare.labels import FLARE_ORGANS
    name = lambda k: FLARE_ORGANS.get(k, "background") if k else "missed"  # noqa: E731
    lines = []
    for organ, row in rows.items():
        shares = ", ".join(f"{name(k)} {v:.0%}" for k, v in list(row["predicted_as"].items())[:4])
        lines.append(f"    {FLARE_ORGANS[organ]}: {shares}; precision {row['precision']}; centroid offset "
                     f"{row['centroid_offset_mm_xyz']} mm")
    return "\n".join(lines)


def demo_options(demo: Path) -> tuple[Path, Path, list[str]]:
    """The model folders a finished nnUNetv2_flare_demo trained and the prediction options it used."""
    summary = json.loads((demo / "demo_summary.json").read_text())
    settings, trained = summary["settings"], summary["training"]
    options = ["--restore", settings["restore"], "--follow_organs", str(settings["follow_organs"])]
    options += ["--shift_tta"] if settings["shift_tta"] else []
    return Path(trained["locator"]["model_folder"]), Path(trained["organs"]["model_folder"]), options


def main(argv: Sequence[str] | None = None) -> int:
    from nnunetv2_flare.labels import FLARE_ORGANS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, help="a finished nnUNetv2_flare_demo folder: its models and options")
    p.add_argument("-m1", type=Path, help="locator model folder (instead of --demo)")
    p.add_argument("-m2", type=Path, help="organ model folder (instead of --demo)")
    p.add_argument("-o", type=Path, default=Path("real_ct_scores"))
    p.add_argument("--explain", action="store_true", help="also print where each organ's voxels went")
    args, predict_options = p.parse_known_args(argv)
    if args.demo:
        locator, organs, options = demo_options(args.demo)
    elif args.m1 and args.m2:
        locator, organs, options = args.m1, args.m2, []
    else:
        p.error("give --demo FOLDER or -m1 and -m2")
    options += predict_options  # e.g. --window fitted, --backend torch
    cases = [c for c in real_cases() if c.image.exists() and c.reference.exists()]
    if not cases:
        print(f"no real CTs found under {REAL}", file=sys.stderr)
        return 1
    from nnunetv2_flare.inference.cli import predict as predict_cli
    rows = {}
    for case in cases:
        output = args.o / f"{case.name}.nii.gz"
        code = predict_cli.main(["-i", str(case.image), "-o", str(output), "-m1", str(locator), "-m2", str(organs),
                                 "--overwrite", "--disable_progress_bar", *options])
        if code != 0:
            return code
        reference, prediction = flare_reference(case), sitk.ReadImage(str(output))
        scores = score(reference, prediction, case.organs)
        went = where_organs_went(reference, prediction, case.organs)
        rows[case.name] = {"reference": case.kind, "DSC": {FLARE_ORGANS[o]: scores["DSC"][o] for o in case.organs},
                           "NSD": {FLARE_ORGANS[o]: scores["NSD"][o] for o in case.organs},
                           "mean_DSC": scores["mean_DSC"], "mean_NSD": scores["mean_NSD"],
                           "where_organs_went": {FLARE_ORGANS[o]: row for o, row in went.items()}}
        shown = ", ".join(f"{FLARE_ORGANS[o]} {scores['DSC'][o]:.2f}" for o in case.organs)
        print(f"{case.name} ({case.kind}): mean DSC {scores['mean_DSC']:.3f} over {len(case.organs)} organs: {shown}")
        if args.explain:
            print(explain(went))
    args.o.mkdir(parents=True, exist_ok=True)
    (args.o / "real_ct_scores.json").write_text(json.dumps({"locator": str(locator), "organs": str(organs),
                                                            "options": options, "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
