"""`nnUNetv2_flare_demo [--minutes M] [-o DIR]`: the whole method end to end on synthetic phantoms, on the CPU.

Every stage runs the command a user runs, as a subprocess (its full output goes to DIR/logs/):

 1. nnUNetv2_flare_make_phantoms        training and held-out phantom CTs with all 13 organ labels
 2. nnUNetv2_flare_plan_and_preprocess  FlarePlans; the demo adds one CPU configuration to it (below)
 3. nnUNetv2_train ... flare_locator    Phase 1, time-boxed (nnUNetTrainerFlareLocator_demo)
 4. nnUNetv2_train ... flare_organs_demo  Phase 2, time-boxed (nnUNetTrainerFlareOrgans_demo)
 5. nnUNetv2_flare_predict              the two-phase cascade on the held-out phantoms
 6. nnUNetv2_flare_evaluate             FLARE DSC / NSD against their labels

Phase 2 at the paper's settings (96^3 patches at 2 x 1.5 x 1.5 mm) cannot learn much in minutes on two cores, even
with the narrow network, so the demo appends the configuration `flare_organs_demo` to the plans: the
`flare_organs_narrow` network (24/48/96/192 channels, same blocks) at a coarser spacing with small patches. Adding
configurations to a plans file is nnU-Net's documented way to customise plans; the planner keeps them on re-runs.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from nnunetv2_flare.atomic_io import write_json_atomic

DEMO_CONFIGURATION = "flare_organs_demo"
LOCATOR_CONFIGURATION = "flare_locator"
LOCATOR_TRAINER = "nnUNetTrainerFlareLocator_demo"
ORGAN_TRAINER = "nnUNetTrainerFlareOrgans_demo"
PLANS = "FlarePlans"
PHANTOM_LABEL = "PHANTOM RESULTS: synthetic CTs from nnUNetv2_flare_make_phantoms, not clinical data"
# output lines of the subprocesses worth showing on the terminal (everything goes to the logs)
_SHOWN = re.compile(r"(Epoch \d+|train_loss|Pseudo dice|demo time box|wrote \d+|Done:|predicted|Traceback|Error)")


@dataclass
class DemoSettings:
    """What the demo makes and trains. The defaults fit ~15 minutes of a 2-core laptop CPU."""
    minutes: float = 15.0                 # wall-clock target of the whole demo
    dataset_id: int = 900
    num_training: int = 16
    num_test: int = 4
    shape: str = "small"                  # phantom grid: 128 x 128 in-plane, ~3 mm pixels
    seed: int = 0
    organ_spacing: tuple[float, float, float] = (6.0, 4.5, 4.5)   # (z, y, x) mm, 3x the paper's
    organ_patch_size: tuple[int, int, int] = (48, 48, 48)         # 288 x 216 x 216 mm at that spacing
    batch_size: int = 2
    iterations_per_epoch: int = 25
    locator_share: float = 0.25           # fraction of the training time for Phase 1 (the easier task)
    predict_seconds_per_case: float = 12.0  # time kept free after training for prediction (and evaluation)
    max_epochs: int = 1000
    num_processes: int = 2


SMOKE = dict(num_training=3, num_test=1, shape="tiny", iterations_per_epoch=2, max_epochs=1,
             organ_spacing=(12.0, 9.0, 9.0), organ_patch_size=(32, 32, 32), num_processes=1)


@dataclass
class Stage:
    name: str
    command: list[str]
    seconds: float = 0.0
    log: str = ""


@dataclass
class DemoResult:
    output_folder: Path
    settings: DemoSettings
    stages: list[Stage] = field(default_factory=list)
    summary: dict | None = None
    training: dict = field(default_factory=dict)


class DemoError(RuntimeError):
    pass


def _command(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DemoError(f"the command {name} is not on PATH; install the package (pip install -e . in the "
                        f"repository; nnU-Net's commands come with nnunetv2) and run the demo from that environment")
    return path


def demo_environment(output_folder: Path, settings: DemoSettings, base: dict[str, str] | None = None
                     ) -> dict[str, str]:
    """Environment of the stage subprocesses: nnU-Net's folders under `output_folder` unless already set,
    this package's trainers on nnUNet_extTrainer, one augmentation worker (two cores: more workers only compete
    with training)."""
    from nnunetv2_flare.training.ext_trainer_path import ensure_ext_trainer_env
    env = dict(os.environ if base is None else base)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if not env.get(name):
            env[name] = str(output_folder / name)
    env.setdefault("nnUNet_n_proc_DA", "1")
    env["nnUNetFlare_demo_iterations"] = str(settings.iterations_per_epoch)
    env["nnUNetFlare_demo_batch_size"] = str(settings.batch_size)
    env["nnUNetFlare_demo_max_epochs"] = str(settings.max_epochs)
    ensure_ext_trainer_env(env)
    return env


def check_dataset_id_free(env: dict[str, str], dataset_id: int, dataset_name: str) -> None:
    """nnU-Net finds datasets by id: another Dataset<id>_* in the same folders would be ambiguous."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = Path(env[name])
        if not folder.is_dir():
            continue
        others = [p.name for p in folder.glob(f"Dataset{dataset_id:03d}_*") if p.name != dataset_name]
        if others:
            raise DemoError(f"{folder} already holds {others[0]} with id {dataset_id}; choose a free id with -d "
                            f"(the demo writes {dataset_name})")


def add_demo_configuration(plans_file: Path, settings: DemoSettings) -> dict:
    """Append `flare_organs_demo` (the narrow organ network at the demo's spacing and patch size, without stochastic
    depth) to the plans."""
    from nnunetv2_flare.inference.model_loading import resolve_configuration
    plans = json.loads(plans_file.read_text())
    architecture = copy.deepcopy(resolve_configuration(plans, "flare_organs_narrow")["architecture"])
    # stochastic depth regularises long runs; in a run of ~1,000 iterations it only slows learning down
    architecture["arch_kwargs"]["drop_path_rate"] = 0.0
    plans["configurations"][DEMO_CONFIGURATION] = {
        "inherits_from": "flare_organs_narrow",
        "data_identifier": f"{PLANS}_{DEMO_CONFIGURATION}",
        "spacing": [float(s) for s in settings.organ_spacing],
        "patch_size": [int(s) for s in settings.organ_patch_size],
        "batch_size": int(settings.batch_size),
        "architecture": architecture,
    }
    write_json_atomic(plans, plans_file)
    return plans["configurations"][DEMO_CONFIGURATION]


def _run_stage(stage: Stage, env: dict[str, str], log_folder: Path, echo: bool) -> None:
    log_folder.mkdir(parents=True, exist_ok=True)
    log_file = log_folder / f"{stage.name}.log"
    stage.log = str(log_file)
    print(f"\n== {stage.name}: {' '.join(Path(stage.command[0]).name if i == 0 else a for i, a in enumerate(stage.command))}",
          flush=True)
    start = time.perf_counter()
    with open(log_file, "w") as log:
        process = subprocess.Popen(stage.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if echo or _SHOWN.search(line):
                print("   " + line.rstrip()[-150:], flush=True)
        code = process.wait()
    stage.seconds = time.perf_counter() - start
    if code != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-25:])
        raise DemoError(f"stage {stage.name} failed (exit code {code}); its last lines:\n{tail}\nfull log: {log_file}")
    print(f"   done in {stage.seconds:.0f} s (log: {log_file})", flush=True)


def run_demo(output_folder: str | os.PathLike = "flare_demo", settings: DemoSettings | None = None,
             echo: bool = False) -> DemoResult:
    """Run all stages; returns their commands and timings and the evaluation summary. Writes
    `output_folder/demo_summary.json`."""
    settings = settings or DemoSettings()
    start = time.time()
    output_folder = Path(output_folder).resolve()
    output_folder.mkdir(parents=True, exist_ok=True)
    env = demo_environment(output_folder, settings)
    from nnunetv2_flare.phantoms.dataset import dataset_folder_name
    dataset_name = dataset_folder_name(settings.dataset_id)
    check_dataset_id_free(env, settings.dataset_id, dataset_name)
    raw = Path(env["nnUNet_raw"]) / dataset_name
    logs = output_folder / "logs"
    predictions = output_folder / "predictions"
    result = DemoResult(output_folder, settings)
    did = str(settings.dataset_id)
    num_processes = str(settings.num_processes)

    def run(name: str, command: list[str]) -> Stage:
        stage = Stage(name, command)
        result.stages.append(stage)
        _run_stage(stage, env, logs, echo)
        return stage

    run("1_phantoms", [_command("nnUNetv2_flare_make_phantoms"), "-d", did, "-n", str(settings.num_training),
                       "-t", str(settings.num_test), "--shape", settings.shape, "--seed", str(settings.seed),
                       "-np", num_processes])
    plan = [_command("nnUNetv2_flare_plan_and_preprocess"), "-d", did, "-np", num_processes]
    run("2a_plan", plan + ["--no_pp"])
    plans_file = Path(env["nnUNet_preprocessed"]) / dataset_name / f"{PLANS}.json"
    demo_cfg = add_demo_configuration(plans_file, settings)
    shown = {k: v for k, v in demo_cfg.items() if k != "architecture"}
    print(f"   added configuration {DEMO_CONFIGURATION} to {plans_file}: {shown} -- the flare_organs_narrow "
          f"network (24/48/96/192 channels, no stochastic depth) at {settings.organ_spacing} mm with "
          f"{settings.organ_patch_size} patches, NOT the paper's flare_organs (60/120/240/480 channels, 96^3 at "
          f"2 x 1.5 x 1.5 mm)", flush=True)
    run("2b_preprocess", plan + ["-c", LOCATOR_CONFIGURATION, DEMO_CONFIGURATION])

    # the time left after the stages so far, minus prediction and evaluation, goes to training
    reserve_s = 30.0 + settings.predict_seconds_per_case * settings.num_test
    train_seconds = settings.minutes * 60 - (time.time() - start) - reserve_s
    if settings.max_epochs >= 1000 and train_seconds < 60:
        raise DemoError(f"--minutes {settings.minutes} leaves {train_seconds:.0f} s for training after the data "
                        f"stages; give the demo more minutes")
    train = [_command("nnUNetv2_train"), did]
    env["nnUNetFlare_demo_deadline"] = str(time.time() + max(train_seconds, 0) * settings.locator_share)
    run("3_train_locator", train + [LOCATOR_CONFIGURATION, "all", "-p", PLANS, "-tr", LOCATOR_TRAINER,
                                    "-device", "cpu"])
    # Phase 2 gets what Phase 1 left (its start-up and saving included)
    env["nnUNetFlare_demo_deadline"] = str(start + settings.minutes * 60 - reserve_s)
    run("4_train_organs", train + [DEMO_CONFIGURATION, "all", "-p", PLANS, "-tr", ORGAN_TRAINER, "-device", "cpu"])
    env.pop("nnUNetFlare_demo_deadline")

    report = output_folder / "prediction_report.json"
    run("5_predict", [_command("nnUNetv2_flare_predict"), "-i", str(raw / "imagesTs"), "-o", str(predictions),
                      "-d", did, "-tr1", LOCATOR_TRAINER, "-tr2", ORGAN_TRAINER, "-c2", DEMO_CONFIGURATION,
                      "-p", PLANS, "--overwrite", "--report", str(report), "--disable_progress_bar"])
    summary_file = output_folder / "summary_flare.json"
    run("6_evaluate", [_command("nnUNetv2_flare_evaluate"), "-ref", str(raw / "labelsTs"), "-pred",
                       str(predictions), "-o", str(summary_file)])
    result.summary = json.loads(summary_file.read_text())
    results = Path(env["nnUNet_results"]) / dataset_name
    result.training = {
        "locator": trained_length(results / f"{LOCATOR_TRAINER}__{PLANS}__{LOCATOR_CONFIGURATION}", settings),
        "organs": trained_length(results / f"{ORGAN_TRAINER}__{PLANS}__{DEMO_CONFIGURATION}", settings)}

    write_json_atomic({
        "label": PHANTOM_LABEL,
        "settings": asdict(settings),
        "organ_configuration": {DEMO_CONFIGURATION: demo_cfg},
        "training": result.training,
        "stages": [asdict(s) for s in result.stages],
        "total_seconds": time.time() - start,
        "mean_DSC": result.summary["mean_DSC"], "mean_NSD": result.summary["mean_NSD"],
        "per_organ": result.summary["per_organ"],
        "folders": {name: env[name] for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
                   | {"predictions": str(predictions), "logs": str(logs), "evaluation": str(summary_file)},
    }, output_folder / "demo_summary.json")
    _print_report(result, env, time.time() - start)
    return result


def trained_length(model_folder: Path, settings: DemoSettings) -> dict:
    """Epochs and iterations a time-boxed training reached (from its final checkpoint)."""
    import torch
    checkpoint = torch.load(model_folder / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)
    epochs = int(checkpoint["current_epoch"])
    return {"model_folder": str(model_folder), "epochs": epochs,
            "iterations": epochs * settings.iterations_per_epoch, "batch_size": settings.batch_size}


def _print_report(result: DemoResult, env: dict[str, str], total_seconds: float) -> None:
    from nnunetv2_flare.evaluation.evaluate_folders import format_table
    s = result.settings
    print("\n" + "=" * 78)
    print(PHANTOM_LABEL)
    print(f"{s.num_test} held-out phantom(s) ({s.shape} grid), models trained on {s.num_training} phantoms for "
          f"{s.minutes:g} minutes of demo time on the CPU.")
    print(f"Phase 2 used {DEMO_CONFIGURATION}: the narrow organ network (flare_organs_narrow, 24/48/96/192 "
          f"channels) at {' x '.join(f'{v:g}' for v in s.organ_spacing)} mm, {'x'.join(map(str, s.organ_patch_size))} "
          f"patches -- a CPU demo setting, not the paper's configuration.")
    locator, organs = result.training["locator"], result.training["organs"]
    print(f"Training reached {locator['iterations']} iterations (batch {locator['batch_size']}) for Phase 1 and "
          f"{organs['iterations']} for Phase 2; the paper trains each phase for 150 x 250 iterations.")
    print("=" * 78)
    print(format_table(result.summary))
    print("\nstage timings")
    for stage in result.stages:
        print(f"  {stage.name:<18}{stage.seconds:>8.0f} s")
    print(f"  {'total':<18}{total_seconds:>8.0f} s")
    print("\nwritten")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        print(f"  {name:<20}{env[name]}")
    print(f"  {'predictions':<20}{result.output_folder / 'predictions'}")
    print(f"  {'evaluation':<20}{result.output_folder / 'summary_flare.json'}")
    print(f"  {'demo summary':<20}{result.output_folder / 'demo_summary.json'}")
    print(f"  {'logs':<20}{result.output_folder / 'logs'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nnUNetv2_flare_demo",
        description="End-to-end demo on synthetic phantoms, CPU only, no downloads: make phantoms, plan and "
                    "preprocess, train both phases within the time budget, predict held-out phantoms with the "
                    "cascade, evaluate (FLARE DSC / NSD). Runs the package's real commands as subprocesses.")
    p.add_argument("--minutes", type=float, default=DemoSettings.minutes,
                   help=f"wall-clock budget of the whole demo in minutes (default {DemoSettings.minutes:g}); "
                        f"training gets what the other stages leave")
    p.add_argument("-o", default="flare_demo",
                   help="output folder (default ./flare_demo); nnUNet_raw / nnUNet_preprocessed / nnUNet_results "
                        "go under it unless they are set in the environment")
    p.add_argument("-d", type=int, default=DemoSettings.dataset_id,
                   help=f"dataset id of the phantom dataset (default {DemoSettings.dataset_id})")
    p.add_argument("-n", type=int, default=DemoSettings.num_training, help="number of training phantoms")
    p.add_argument("-t", type=int, default=DemoSettings.num_test, help="number of held-out test phantoms")
    p.add_argument("--seed", type=int, default=DemoSettings.seed, help="phantom seed")
    p.add_argument("--verbose", action="store_true", help="show the stages' full output (always in DIR/logs)")
    # a run through every stage in about a minute (tests): tiny phantoms, one epoch of two iterations per phase
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    return p


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    settings = DemoSettings(minutes=args.minutes, dataset_id=args.d, num_training=args.n, num_test=args.t,
                            seed=args.seed)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(settings, key, value)
        settings.num_training, settings.num_test = min(args.n, SMOKE["num_training"]), min(args.t, SMOKE["num_test"])
    if settings.num_training < 2 or settings.num_test < 1:
        raise DemoError("the demo needs at least 2 training (-n) and 1 test (-t) phantoms")
    return settings


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run_demo(args.o, settings_from_args(args), echo=args.verbose)
    except DemoError as e:
        raise SystemExit(f"nnUNetv2_flare_demo: {e}")
    except KeyboardInterrupt:
        raise SystemExit("nnUNetv2_flare_demo: interrupted")


if __name__ == "__main__":
    main()
