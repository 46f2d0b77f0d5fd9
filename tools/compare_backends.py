"""Accuracy of the speed levers on labelled cases: runtimes (torch / openvino), precision and tile overlap, with
trained models.

    python tools/compare_backends.py --demo flare_demo                 # the models and test phantoms of a demo run
    python tools/compare_backends.py -m1 LOCATOR -m2 ORGANS -i IMAGES -r LABELS [--overlaps 0 0.5]

Each setting predicts every case (`FlareCascadePredictor`, the command's code path) and is scored with FLARE's DSC
(nnunetv2_flare.evaluation); its labels are compared voxel by voxel with the first setting's (eager PyTorch, the
fewest tiles): the share of foreground voxels (label > 0 in either) that agree. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunetv2_flare.atomic_io import write_image_atomic
from nnunetv2_flare.evaluation.evaluate_folders import evaluate_folders
from nnunetv2_flare.evaluation.metrics import foreground_agreement
from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings
from nnunetv2_flare.inference.core.settings import RESTORE_MODES
from nnunetv2_flare.inference.inputs.reading import list_cases
from nnunetv2_flare.inference.models.backends import argmax_labels


def demo_folders(demo: Path) -> tuple[Path, Path, Path, Path]:
    from nnunetv2_flare.demo import (
        DEMO_CONFIGURATION,
        DEMO_LOCATOR_CONFIGURATION,
        DEMO_LOCATOR_TRAINER,
        DEMO_ORGAN_TRAINER,
        PLANS,
    )
    results = next((demo / "nnUNet_results").glob("Dataset*"))
    raw = demo / "nnUNet_raw" / results.name
    return (results / f"{DEMO_LOCATOR_TRAINER}__{PLANS}__{DEMO_LOCATOR_CONFIGURATION}",
            results / f"{DEMO_ORGAN_TRAINER}__{PLANS}__{DEMO_CONFIGURATION}", raw / "imagesTs", raw / "labelsTs")


class Bf16Emulation:
    """The torch organ model with weights and activations in bf16 (inputs fp32, the argmax of its bf16 logits): a
    pessimistic stand-in for OpenVINO's bf16 on a CPU without native bf16, where OpenVINO cannot be asked for it.
    OpenVINO keeps normalizations and softmax in fp32 and accumulates in fp32; here every op rounds to bf16."""

    def __init__(self, model) -> None:
        self.model = model
        model.network.to(torch.bfloat16)

    @torch.inference_mode()
    def __call__(self, x: np.ndarray, grid=None) -> np.ndarray:
        m = self.model
        out = m.network(torch.from_numpy(x).to(torch.bfloat16).permute(m.forward_axes))
        return argmax_labels(out.permute(m.backward_axes)[0].float().numpy())


def make_predictor(m1: Path, m2: Path, setting: str, overlap: float, restore: str) -> FlareCascadePredictor:
    """`setting`: a backend ('torch', 'openvino'), 'openvino-bf16' (OpenVINO's bf16: CPUs with native bf16 only) or
    'torch-bf16' (Bf16Emulation)."""
    backend = setting.removesuffix("-bf16")
    precision = "bf16" if setting == "openvino-bf16" else "fp32"
    predictor = FlareCascadePredictor.from_folders(
        m1, m2, ModelSettings(backend=backend, precision=precision),
        CascadeSettings(tile_min_overlap=overlap, progress=False, restore=restore))
    if setting == "torch-bf16":
        predictor.organs.model = Bf16Emulation(predictor.organs.model)
    return predictor


def agreement(a: Path, b: Path) -> tuple[int, int]:
    return foreground_agreement(*(sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (a, b)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, help="output folder of nnUNetv2_flare_demo")
    p.add_argument("-m1", type=Path)
    p.add_argument("-m2", type=Path)
    p.add_argument("-i", type=Path, help="images")
    p.add_argument("-r", type=Path, help="reference labels")
    p.add_argument("--backends", nargs="+", default=["torch", "openvino"],
                   choices=["torch", "openvino", "openvino-bf16", "torch-bf16"],
                   help="openvino-bf16: OpenVINO in bf16 (native bf16 only); torch-bf16: see Bf16Emulation")
    p.add_argument("--restore", default=RESTORE_MODES[0], choices=RESTORE_MODES, help="as nnUNetv2_flare_predict's")
    p.add_argument("--overlaps", type=float, nargs="+", default=[0.0], help="tile_min_overlap values")
    args = p.parse_args()
    m1, m2, images, refs = demo_folders(args.demo) if args.demo else (args.m1, args.m2, args.i, args.r)
    cases = list_cases([images])
    rows, first = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            for overlap in args.overlaps:
                name = f"{backend}, overlap {overlap:g}"
                out = Path(tmp) / f"{backend}_{overlap:g}"
                out.mkdir()
                predictor = make_predictor(m1, m2, backend, overlap, args.restore)
                seconds, tiles = 0.0, 0
                for case in cases:
                    t = time.perf_counter()
                    result = predictor.run(case.path)
                    seconds += time.perf_counter() - t
                    tiles += result.n_patches
                    write_image_atomic(result.labels, case.output_path(out))
                summary = evaluate_folders(refs, out, progress=False)
                row = {"setting": name, "tiles": tiles, "seconds": seconds, "dsc": summary["mean_DSC"],
                       "nsd": summary["mean_NSD"]}
                if first is None:
                    first = out
                else:
                    same, total = np.sum([agreement(first / f.name, out / f.name)
                                          for f in sorted(first.iterdir())], axis=0)
                    row["agreement"] = same / max(total, 1)
                rows.append(row)
        print(f"\n{len(cases)} cases; agreement: foreground voxels equal to '{rows[0]['setting']}'\n")
        print("| setting | tiles | seconds | mean DSC | mean NSD | agreement |\n|---|---|---|---|---|---|")
        for r in rows:
            agree = f"{100 * r['agreement']:.2f} %" if "agreement" in r else "-"
            print(f"| {r['setting']} | {r['tiles']} | {r['seconds']:.1f} | {r['dsc']:.4f} | {r['nsd']:.4f} | {agree} |")


if __name__ == "__main__":
    main()
