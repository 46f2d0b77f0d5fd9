"""Accuracy of windows fitted to the crop, at the demo's scale, in a regime like the paper's (issue 31).

The paper runs 96^3 tiles over crops several patches wide (12 tiles at 512 x 512 x 218), and trains with batches of 6
patches, about the crop's voxels. The demo's own 48^3 patches nearly cover its crops, so this experiment gives the
demo's organ network a smaller nominal patch (default 32^3 at the demo's 6 x 3.5 x 3.5 mm: ~12 tiles a crop) and a
batch whose voxels are about a crop's (default 8), then trains it twice with the same iterations and seed:

- `nnUNetTrainerFlareOrgans_demo`: the fixed patch (the paper's way), predicted with tiles;
- `nnUNetTrainerFlareOrgansAnyWindow_demo`: a window shape drawn per batch, predicted with tiles and with windows
  fitted to the crop (`--window fitted`).

Each is predicted with the demo's locator and its prediction options on the demo's held-out phantoms (run the demo
with `-t 48` for 48 of them) and scored with FLARE's metric (`nnUNetv2_flare_evaluate`).

    nnUNetv2_flare_demo -o flare_demo -t 48
    python tools/window_accuracy.py --demo flare_demo [--patch 32] [--batch 8] [--iterations 2200] [-o OUT]

Prints a table per organ and writes OUT/window_accuracy.json. Trained models stay in the demo's nnUNet_results.
Hours on two cores: two trainings of the demo's Phase-2 length and six predictions of the held-out set.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from benchmark_cascade import cpu_flags

from nnunetv2_flare.atomic_io import write_json_atomic
from nnunetv2_flare.demo import (
    DEMO_CONFIGURATION,
    DEMO_LOCATOR_CONFIGURATION,
    DEMO_LOCATOR_TRAINER as LOCATOR_TRAINER,
    DemoSettings,
    Stage,
    _command,
    _run_stage,
    demo_environment,
)
from nnunetv2_flare.labels import FLARE_ORGANS
from nnunetv2_flare.names import MAX_EPOCHS_ENV, PLANS

FIXED_TRAINER = "nnUNetTrainerFlareOrgans_demo"
ANY_WINDOW_TRAINER = "nnUNetTrainerFlareOrgansAnyWindow_demo"


def add_configuration(plans_file: Path, name: str, patch: int, batch: int) -> None:
    """`name`: the demo's organ configuration with another patch and batch, on the same preprocessed data."""
    plans = json.loads(plans_file.read_text())
    plans["configurations"][name] = {"inherits_from": DEMO_CONFIGURATION, "patch_size": [patch] * 3,
                                     "batch_size": batch}
    write_json_atomic(plans, plans_file)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, default=Path("flare_demo"), help="a finished nnUNetv2_flare_demo folder")
    p.add_argument("--patch", type=int, default=32, help="nominal patch edge (multiple of 16)")
    p.add_argument("--batch", type=int, default=8, help="batch size (its voxels bound the any-window shapes)")
    p.add_argument("--iterations", type=int, default=DemoSettings.organ_iterations)
    p.add_argument("--window_voxels", type=int, nargs="*", default=[],
                   help="also predict the any-window model with fitted windows of at most N voxels each")
    p.add_argument("-o", type=Path, default=Path("window_accuracy"))
    args = p.parse_args()

    summary = json.loads((args.demo / "demo_summary.json").read_text())
    settings = DemoSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in summary["settings"].items()})
    settings.batch_size = args.batch
    env = demo_environment(args.demo.resolve(), settings, {**os.environ, **summary["folders"]})
    dataset = next(Path(env["nnUNet_raw"]).glob(f"Dataset{settings.dataset_id:03d}_*")).name
    configuration = f"{DEMO_CONFIGURATION}_p{args.patch}b{args.batch}"
    add_configuration(Path(env["nnUNet_preprocessed"]) / dataset / f"{PLANS}.json", configuration, args.patch,
                      args.batch)
    results = Path(env["nnUNet_results"]) / dataset
    locator = results / f"{LOCATOR_TRAINER}__{PLANS}__{DEMO_LOCATOR_CONFIGURATION}"
    images, references = (Path(env["nnUNet_raw"]) / dataset / f for f in ("imagesTs", "labelsTs"))
    logs = args.o / "logs"
    env[MAX_EPOCHS_ENV] = str(settings.epochs(args.iterations))
    rows = {}
    for trainer in (FIXED_TRAINER, ANY_WINDOW_TRAINER):
        model = results / f"{trainer}__{PLANS}__{configuration}"
        if not (model / "fold_all" / "checkpoint_final.pth").is_file():
            stage = Stage(f"train_{trainer}", [_command("nnUNetv2_train"), str(settings.dataset_id), configuration,
                                               "all", "-p", PLANS, "-tr", trainer, "-device", "cpu"])
            _run_stage(stage, env, logs, echo=False, epochs=settings.epochs(args.iterations))
        windows = [("tiles", None)] + ([] if trainer == FIXED_TRAINER else
                                       [("fitted", None)] + [("fitted", n) for n in args.window_voxels])
        for window, voxels in windows:
            name = f"{trainer}_{window}" + (f"_{voxels}" if voxels else "")
            predictions = args.o / name
            report = args.o / f"{name}_report.json"
            start = time.perf_counter()
            _run_stage(Stage(f"predict_{name}", [
                _command("nnUNetv2_flare_predict"), "-i", str(images), "-o", str(predictions), "-m1", str(locator),
                "-m2", str(model), "--restore", settings.restore, "--follow_organs", str(settings.follow_organs),
                "--window", window, "--overwrite", "--report", str(report), "--disable_progress_bar"]
                + (["--window_voxels", str(voxels)] if voxels else [])
                + (["--shift_tta"] if settings.shift_tta else [])), env, logs, echo=False)
            seconds = time.perf_counter() - start
            scores = args.o / f"{name}_summary.json"
            _run_stage(Stage(f"evaluate_{name}", [_command("nnUNetv2_flare_evaluate"), "-ref", str(references),
                                                  "-pred", str(predictions), "-o", str(scores)]), env, logs, False)
            cases = json.loads(report.read_text())["cases"].values()
            rows[name] = {**json.loads(scores.read_text()), "predict_seconds": seconds,
                          "windows": sum(w["count"] for c in cases for w in c.get("organ_windows", []))}
    write_json_atomic({"patch": args.patch, "batch": args.batch, "iterations": args.iterations,
                       "configuration": configuration, "machine": platform.processor() or platform.machine(),
                       "cpu_flags": cpu_flags(), "rows": rows}, args.o / "window_accuracy.json")
    print_table(rows)


def print_table(rows: dict) -> None:
    names = list(rows)
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    print("| mean DSC | " + " | ".join(f"{rows[n]['mean_DSC']:.4f}" for n in names) + " |")
    print("| mean NSD | " + " | ".join(f"{rows[n]['mean_NSD']:.4f}" for n in names) + " |")
    for organ in FLARE_ORGANS.values():
        print(f"| {organ} | " + " | ".join(f"{rows[n]['per_organ']['DSC'][organ]:.4f}" for n in names) + " |")
    print("| organ windows, all cases | " + " | ".join(str(rows[n]["windows"]) for n in names) + " |")
    print("| prediction, s | " + " | ".join(f"{rows[n]['predict_seconds']:.0f}" for n in names) + " |")


if __name__ == "__main__":
    main()
