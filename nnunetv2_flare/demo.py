"""`nnUNetv2_flare_demo [-o DIR] [--minutes M]`: the whole method end to end on synthetic phantoms, on the CPU.

Every stage runs the command a user runs, as a subprocess (its full output goes to DIR/logs/):

 1. nnUNetv2_flare_make_phantoms        training and held-out phantom CTs with all 13 organ labels
 2. nnUNetv2_flare_plan_and_preprocess  FlarePlans; the demo adds one CPU configuration to it (below)
 3. nnUNetv2_train ... flare_locator    Phase 1 (nnUNetTrainerFlareLocator_demo)
 4. nnUNetv2_train ... flare_organs_demo  Phase 2 (nnUNetTrainerFlareOrgans_demo)
 5. nnUNetv2_flare_predict              the two-phase cascade on the held-out phantoms
 6. nnUNetv2_flare_evaluate             FLARE DSC / NSD against their labels
then a picture of one held-out case (reference and prediction) in DIR/demo_case.png.

Training runs a fixed number of iterations (seeded, in-process data loading), so the same command gives the same
numbers on a quiet or a busy machine, only slower on the busy one; `--minutes` adds a wall-clock cap.

Phase 2 at the paper's settings (96^3 patches at 2 x 1.5 x 1.5 mm) cannot learn much in minutes on two cores, even
with the narrow network, so the demo appends the configuration `flare_organs_demo` to the plans: the
`flare_organs_narrow` network (24/48/96/192 channels, same blocks) at a coarser spacing with small patches. Adding
configurations to a plans file is nnU-Net's documented way to customise plans; the planner keeps them on re-runs.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from nnunetv2_flare.atomic_io import write_json_atomic
from nnunetv2_flare.cli_errors import FlareArgumentParser, UsageError, run_command
from nnunetv2_flare.comparison_picture import render_comparison
from nnunetv2_flare.demo_timing import TIMED_STEPS, StepSeconds, estimate_seconds, measure_steps
from nnunetv2_flare.inference.core.settings import FOLLOW_ORGANS_ROUNDS
from nnunetv2_flare.labels import FLARE_ORGANS
from nnunetv2_flare.names import (
    BATCH_SIZE_ENV,
    DEADLINE_ENV,
    ITERATIONS_ENV,
    LOCATOR_CONFIGURATION,
    MAX_EPOCHS_ENV,
    PLANS,
    SEED_ENV,
    THREADS_ENV,
)

DEMO_CONFIGURATION = "flare_organs_demo"
DEMO_LOCATOR_CONFIGURATION = "flare_locator_demo"
DEMO_LOCATOR_TRAINER = "nnUNetTrainerFlareLocator_demo"
DEMO_ORGAN_TRAINER = "nnUNetTrainerFlareOrgans_demo"
PICTURE = "demo_case.png"  # a held-out case, reference vs prediction, in the output folder
PHANTOM_LABEL = "PHANTOM RESULTS: synthetic CTs from nnUNetv2_flare_make_phantoms, not clinical data"
# output lines of the subprocesses worth showing on the terminal (everything goes to the logs)
_SHOWN = re.compile(r"(demo time box|time box:|wrote \d+|Done:|predicted|Traceback|Error)")
# cores kept busy by other processes from which the demo's OpenMP threads sleep instead of spinning while they wait
BUSY_CORES = 0.75
_EPOCH = re.compile(r"Epoch (\d+)\s*$")
_TRAIN_LOSS = re.compile(r"train_loss (-?[\d.]+)")
@dataclass
class DemoSettings:
    """What the demo makes and trains. How long it takes depends on the CPU: the demo estimates it up front from
    timed training steps (`estimated_seconds`, demo_timing.py)."""
    minutes: float | None = None          # optional wall-clock cap of the whole demo; None: the iterations decide
    dataset_id: int = 900
    # phantoms are cheap to make and preprocess: more cases instead of augmentation (docs/demo.md, "The recipe")
    num_training: int = 300
    num_test: int = 8
    shape: str = "small"                  # phantom grid: 128 x 128 in-plane, ~3 mm pixels
    seed: int = 0                         # phantoms and training
    # training phantoms with cut flanks or random CT numbers (nnUNetv2_flare_make_phantoms --truncated_fov,
    # --synthetic_contrast): off, as neither raised the scores on real CT (docs/demo.md, "Real CT")
    truncated_fov: float = 0.0
    synthetic_contrast: float = 0.0
    # (z, y, x) mm. The network decides boundaries on a grid twice as coarse (its stem has stride 2), so 3.5 mm in
    # plane rather than 4.5; finer grids leave the 48^3 patch too little context
    organ_spacing: tuple[float, float, float] = (6.0, 3.5, 3.5)
    organ_patch_size: tuple[int, int, int] = (48, 48, 48)         # 288 x 168 x 168 mm at that spacing
    batch_size: int = 2
    iterations_per_epoch: int = 25
    locator_iterations: int = 300
    # the most iterations the demo's time allows; fewer cost accuracy (docs/demo.md, "How long it takes")
    organ_iterations: int = 2200
    locator_share: float = 0.15           # with --minutes: Phase 1's share of the training time
    predict_seconds_per_case: float = 12.0  # with --minutes: time kept free after training for prediction
    # labels back to the phantoms' ~3 mm grid from the working grid by interpolated class scores
    restore: str = "linear"
    # the aorta and esophagus run far above the abdomen in the long phantoms, beyond the box of a locator trained for
    # minutes: grow the box where organs reach it
    follow_organs: int = FOLLOW_ORGANS_ROUNDS
    # the organ network averaged over its 8 sampling phases (its stem has stride 2); costs seconds here
    shift_tta: bool = True
    num_processes: int = 2
    threads: int | None = None            # CPU threads of training and prediction (None: every core)

    def epochs(self, iterations: int) -> int:
        return max(1, math.ceil(iterations / self.iterations_per_epoch))

    def estimated_seconds(self, steps: StepSeconds) -> dict[str, float]:
        """Seconds of each stage on a machine whose training steps take `steps` (demo_timing.measure_steps)."""
        return estimate_seconds(steps, self.epochs(self.locator_iterations) * self.iterations_per_epoch,
                                self.epochs(self.organ_iterations) * self.iterations_per_epoch,
                                self.num_training + self.num_test, self.num_test)


SMOKE = dict(num_training=3, num_test=1, shape="tiny", iterations_per_epoch=2, locator_iterations=2,
             organ_iterations=2, organ_spacing=(12.0, 9.0, 9.0), organ_patch_size=(32, 32, 32), num_processes=1)
# the least --minutes that leaves training anything: the data stages, prediction and evaluation take about this long
MIN_MINUTES = 4.0


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


class DemoError(UsageError):
    """Misuse found before any work (exit 2, one line)."""


class StageFailed(RuntimeError):
    """A stage's command failed (exit 1): its last lines and its log are in the message."""


def _command(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise DemoError(f"the command {name} is not on PATH; install the package (pip install -e . in the "
                        f"repository; nnU-Net's commands come with nnunetv2) and run the demo from that environment")
    return path


def demo_environment(output_folder: Path, settings: DemoSettings, base: dict[str, str] | None = None
                     ) -> dict[str, str]:
    """Environment of the stage subprocesses: nnU-Net's folders under `output_folder` unless already set,
    this package's trainers on nnUNet_extTrainer, data loading in the training process (the demo trainers do not
    augment, so a worker process would only compete with training for two cores, and sampling stays seeded)."""
    from nnunetv2_flare.training.ext_trainer_path import ensure_ext_trainer_env
    env = dict(os.environ if base is None else base)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if not env.get(name):
            env[name] = str(output_folder / name)
    env["nnUNet_n_proc_DA"] = "0"
    env[ITERATIONS_ENV] = str(settings.iterations_per_epoch)
    env[BATCH_SIZE_ENV] = str(settings.batch_size)
    env[SEED_ENV] = str(settings.seed)
    if settings.threads:
        env[THREADS_ENV] = str(settings.threads)
    env.pop(DEADLINE_ENV, None)
    ensure_ext_trainer_env(env)
    return env


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all CPUs from /proc/stat; None where there is none (not Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, all but guest time (counted in user)


def other_work_running(threshold: float = BUSY_CORES, seconds: float = 1.0) -> bool:
    """Whether other processes keep at least `threshold` cores busy now, sampled over `seconds` before the demo
    starts work (a load average would still count the `pip install` that just ran)."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return False
    busy_share = 1 - (after[0] - before[0]) / (after[1] - before[1])
    return busy_share * (os.cpu_count() or 1) >= threshold


def share_the_cpu(env: dict[str, str]) -> bool:
    """Let OpenMP threads wait by sleeping (OMP_WAIT_POLICY=PASSIVE) when other work is running and the user set no
    policy: beside another busy process a spinning thread holds a core the other thread of its parallel region
    needs, while on an idle machine sleeping costs time (docs/demo.md, "Sharing the CPU"). True if set."""
    if "OMP_WAIT_POLICY" in env or not other_work_running():
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


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


def demo_configurations(plans: dict, settings: DemoSettings) -> dict[str, dict]:
    """`flare_locator_demo` (the locator on flare_locator's data) and `flare_organs_demo` (the narrow organ network
    at the demo's spacing and patch size), both without stochastic depth: it regularises long runs; in runs of a few
    hundred or thousand iterations it only slows learning down."""
    from nnunetv2_flare.inference.models.loading import resolve_configuration
    locator = copy.deepcopy(resolve_configuration(plans, LOCATOR_CONFIGURATION)["architecture"])
    locator["arch_kwargs"]["drop_path_rate"] = 0.0
    architecture = copy.deepcopy(resolve_configuration(plans, "flare_organs_narrow")["architecture"])
    architecture["arch_kwargs"]["drop_path_rate"] = 0.0
    return {DEMO_LOCATOR_CONFIGURATION: {"inherits_from": LOCATOR_CONFIGURATION, "architecture": locator},
            DEMO_CONFIGURATION: {
                "inherits_from": "flare_organs_narrow",
                "data_identifier": f"{PLANS}_{DEMO_CONFIGURATION}",
                "spacing": [float(s) for s in settings.organ_spacing],
                "patch_size": [int(s) for s in settings.organ_patch_size],
                "batch_size": int(settings.batch_size),
                "architecture": architecture,
            }}


def add_demo_configuration(plans_file: Path, settings: DemoSettings) -> dict:
    """Append the demo's configurations (`demo_configurations`) to the plans; returns the organ one."""
    plans = json.loads(plans_file.read_text())
    plans["configurations"].update(demo_configurations(plans, settings))
    write_json_atomic(plans, plans_file)
    return plans["configurations"][DEMO_CONFIGURATION]


def measure_this_machine(settings: DemoSettings, steps: int = TIMED_STEPS) -> StepSeconds:
    """A few timed training steps of the demo's two networks, as its training stages will run them."""
    from nnunetv2_flare.inference.models.loading import resolve_configuration
    from nnunetv2_flare.planning.templates import load_plans_template
    plans = load_plans_template()
    plans["configurations"].update(demo_configurations(plans, settings))
    return measure_steps(resolve_configuration(plans, DEMO_LOCATOR_CONFIGURATION),
                         resolve_configuration(plans, DEMO_CONFIGURATION), settings.batch_size, settings.threads, steps)


def _run_stage(stage: Stage, env: dict[str, str], log_folder: Path, echo: bool, epochs: int | None = None) -> None:
    """Run one command, its output into the stage's log; a training stage (`epochs` given) shows a progress bar
    over its epochs with the last training loss."""
    log_folder.mkdir(parents=True, exist_ok=True)
    log_file = log_folder / f"{stage.name}.log"
    stage.log = str(log_file)
    shown = " ".join([Path(stage.command[0]).name, *stage.command[1:]])
    print(f"\n== {stage.name}: {shown}",
          flush=True)
    start = time.perf_counter()
    bar = tqdm(total=epochs, desc=f"   {stage.name}", unit="epoch", disable=epochs is None, dynamic_ncols=True)
    with open(log_file, "w") as log, bar:
        process = subprocess.Popen(stage.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   encoding="utf-8", bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()  # the log is where a user follows a long stage
            epoch, loss = _EPOCH.search(line), _TRAIN_LOSS.search(line)
            if epoch and epochs is not None:
                bar.update(int(epoch.group(1)) - bar.n)  # "Epoch k" starts epoch k: k are done
            elif loss and epochs is not None:
                bar.set_postfix(train_loss=loss.group(1), refresh=False)
            if echo or _SHOWN.search(line):
                bar.write("   " + line.rstrip()[-150:])
        code = process.wait()
        if code == 0 and epochs is not None:
            bar.update(bar.total - bar.n)
    stage.seconds = time.perf_counter() - start
    if code != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-25:])
        raise StageFailed(f"stage {stage.name} failed (exit code {code}); its last lines:\n{tail}\n"
                          f"full log: {log_file}")
    print(f"   done in {stage.seconds:.0f} s (log: {log_file})", flush=True)


def check_output_folder(output_folder: Path) -> None:
    if output_folder.exists() and not output_folder.is_dir():
        raise DemoError(f"-o {output_folder} is a file; give a folder for the demo's outputs")


def run_demo(output_folder: str | os.PathLike = "flare_demo", settings: DemoSettings | None = None,
             echo: bool = False) -> DemoResult:
    """Run all stages; returns their commands and timings and the evaluation summary. Writes
    `output_folder/demo_summary.json` and `output_folder/demo_case.png`."""
    settings = settings or DemoSettings()
    start = time.time()
    output_folder = Path(output_folder).resolve()
    check_output_folder(output_folder)
    env = demo_environment(output_folder, settings)
    from nnunetv2_flare.phantoms.dataset import dataset_folder_name
    dataset_name = dataset_folder_name(settings.dataset_id)
    check_dataset_id_free(env, settings.dataset_id, dataset_name)
    output_folder.mkdir(parents=True, exist_ok=True)
    print(f"nnUNetv2_flare_demo: {settings.num_training} training and {settings.num_test} held-out phantoms; "
          f"Phase 1 {settings.locator_iterations} and Phase 2 {settings.organ_iterations} iterations of batch "
          f"{settings.batch_size}", flush=True)
    if share_the_cpu(env):
        os.environ["OMP_WAIT_POLICY"] = env["OMP_WAIT_POLICY"]  # the steps timed below run as the stages will
        print("   other work is running: OpenMP threads wait by sleeping "
              "(OMP_WAIT_POLICY=PASSIVE; set it to override)", flush=True)
    steps = measure_this_machine(settings)
    stage_estimates = settings.estimated_seconds(steps)
    estimate = sum(stage_estimates.values())
    print(f"   a training step takes {steps.locator:.2f} s (Phase 1) and {steps.organs:.2f} s (Phase 2) on this "
          f"machine: about {estimate / 60:.0f} minutes in all"
          + (f", at most {settings.minutes:g} minutes (--minutes)" if settings.minutes else ""), flush=True)
    raw = Path(env["nnUNet_raw"]) / dataset_name
    logs = output_folder / "logs"
    predictions = output_folder / "predictions"
    result = DemoResult(output_folder, settings)
    did = str(settings.dataset_id)
    num_processes = str(settings.num_processes)

    def run(name: str, command: list[str], epochs: int | None = None) -> Stage:
        stage = Stage(name, command)
        result.stages.append(stage)
        _run_stage(stage, env, logs, echo, epochs)
        return stage

    run("1_phantoms", [_command("nnUNetv2_flare_make_phantoms"), "-d", did, "-n", str(settings.num_training),
                       "-t", str(settings.num_test), "--shape", settings.shape, "--seed", str(settings.seed),
                       "--truncated_fov", str(settings.truncated_fov),
                       "--synthetic_contrast", str(settings.synthetic_contrast), "-np", num_processes])
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

    train = [_command("nnUNetv2_train"), did]
    locator_epochs = settings.epochs(settings.locator_iterations)
    organ_epochs = settings.epochs(settings.organ_iterations)
    reserve_s = 30.0 + settings.predict_seconds_per_case * settings.num_test
    if settings.minutes:
        # a cap: Phase 1 may use its share of the time left for training, Phase 2 what Phase 1 left
        train_seconds = settings.minutes * 60 - (time.time() - start) - reserve_s
        env[DEADLINE_ENV] = str(time.time() + max(train_seconds, 0) * settings.locator_share)
    env[MAX_EPOCHS_ENV] = str(locator_epochs)
    run("3_train_locator", train + [DEMO_LOCATOR_CONFIGURATION, "all", "-p", PLANS, "-tr", DEMO_LOCATOR_TRAINER,
                                    "-device", "cpu"], epochs=locator_epochs)
    if settings.minutes:
        env[DEADLINE_ENV] = str(start + settings.minutes * 60 - reserve_s)
    env[MAX_EPOCHS_ENV] = str(organ_epochs)
    run("4_train_organs", train + [DEMO_CONFIGURATION, "all", "-p", PLANS, "-tr", DEMO_ORGAN_TRAINER, "-device", "cpu"],
        epochs=organ_epochs)

    report = output_folder / "prediction_report.json"
    run("5_predict", [_command("nnUNetv2_flare_predict"), "-i", str(raw / "imagesTs"), "-o", str(predictions),
                      "-d", did, "-tr1", DEMO_LOCATOR_TRAINER, "-c1", DEMO_LOCATOR_CONFIGURATION,
                      "-tr2", DEMO_ORGAN_TRAINER,
                      "-c2", DEMO_CONFIGURATION,
                      "-p", PLANS, "--restore", settings.restore,
                      "--follow_organs", str(settings.follow_organs), "--overwrite", "--report", str(report),
                      "--disable_progress_bar"]
        + (["--shift_tta"] if settings.shift_tta else [])
        + (["--threads", str(settings.threads)] if settings.threads else []))
    summary_file = output_folder / "summary_flare.json"
    run("6_evaluate", [_command("nnUNetv2_flare_evaluate"), "-ref", str(raw / "labelsTs"), "-pred",
                       str(predictions), "-o", str(summary_file)])
    result.summary = json.loads(summary_file.read_text())
    picture = output_folder / PICTURE
    case = sorted((raw / "labelsTs").glob("*.nii.gz"))[0]
    render_comparison(raw / "imagesTs" / case.name.replace(".nii.gz", "_0000.nii.gz"),
                      {"reference": case, "prediction": predictions / case.name}, picture, FLARE_ORGANS,
                      title=f"{PHANTOM_LABEL}\nheld-out {case.name[:-7]}: reference (top) and the cascade's "
                            f"prediction (bottom)")
    results = Path(env["nnUNet_results"]) / dataset_name
    result.training = {
        "locator": trained_length(results / f"{DEMO_LOCATOR_TRAINER}__{PLANS}__{DEMO_LOCATOR_CONFIGURATION}", settings),
        "organs": trained_length(results / f"{DEMO_ORGAN_TRAINER}__{PLANS}__{DEMO_CONFIGURATION}", settings)}

    write_json_atomic({
        "label": PHANTOM_LABEL,
        "settings": asdict(settings),
        "organ_configuration": {DEMO_CONFIGURATION: demo_cfg},
        "training": result.training,
        "stages": [asdict(s) for s in result.stages],
        "total_seconds": time.time() - start,
        "estimate": {"step_seconds": asdict(steps), "stages_s": stage_estimates, "total_s": estimate},
        "mean_DSC": result.summary["mean_DSC"], "mean_NSD": result.summary["mean_NSD"],
        "per_organ": result.summary["per_organ"],
        "folders": {name: env[name] for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
                   | {"predictions": str(predictions), "logs": str(logs), "evaluation": str(summary_file),
                      "picture": str(picture)},
    }, output_folder / "demo_summary.json")
    _print_report(result, env, time.time() - start, estimate)
    return result


def trained_length(model_folder: Path, settings: DemoSettings) -> dict:
    """Epochs and iterations the training reached (from its final checkpoint)."""
    import torch
    checkpoint = torch.load(model_folder / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)
    epochs = int(checkpoint["current_epoch"])
    return {"model_folder": str(model_folder), "epochs": epochs,
            "iterations": epochs * settings.iterations_per_epoch, "batch_size": settings.batch_size}


def _print_report(result: DemoResult, env: dict[str, str], total_seconds: float, estimate_s: float) -> None:
    from nnunetv2_flare.evaluation.evaluate_folders import format_table
    s = result.settings
    print("\n" + "=" * 78)
    print(PHANTOM_LABEL)
    print(f"{s.num_test} held-out phantom(s) ({s.shape} grid), models trained on {s.num_training} phantoms on the "
          f"CPU (seed {s.seed}).")
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
    print(f"  {'total':<18}{total_seconds:>8.0f} s  (estimated up front: {estimate_s:.0f} s)")
    print("\nwritten")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        print(f"  {name:<20}{env[name]}")
    print(f"  {'predictions':<20}{result.output_folder / 'predictions'}")
    print(f"  {'evaluation':<20}{result.output_folder / 'summary_flare.json'}")
    print(f"  {'demo summary':<20}{result.output_folder / 'demo_summary.json'}")
    print(f"  {'logs':<20}{result.output_folder / 'logs'}")
    print(f"  {'picture':<20}{result.output_folder / PICTURE}  (a held-out case: reference vs prediction)")


def build_parser() -> argparse.ArgumentParser:
    p = FlareArgumentParser(
        prog="nnUNetv2_flare_demo",
        description="End-to-end demo on synthetic phantoms, CPU only, no downloads: make phantoms, plan and "
                    "preprocess, train both phases for a fixed number of iterations, predict held-out phantoms with "
                    "the cascade, evaluate (FLARE DSC / NSD). Runs the package's real commands as subprocesses.")
    p.add_argument("--minutes", type=float, default=None,
                   help="optional wall-clock cap of the whole demo in minutes: training stops early to fit it (the "
                        "result then depends on the machine's speed). Default: no cap; the demo trains a fixed "
                        "number of iterations and prints how long that takes on this machine when it starts")
    p.add_argument("-o", default="flare_demo",
                   help="output folder (default ./flare_demo); nnUNet_raw / nnUNet_preprocessed / nnUNet_results "
                        "go under it unless they are set in the environment")
    p.add_argument("-d", type=int, default=DemoSettings.dataset_id,
                   help=f"dataset id of the phantom dataset (default {DemoSettings.dataset_id})")
    p.add_argument("-n", type=int, default=DemoSettings.num_training, help="number of training phantoms")
    p.add_argument("-t", type=int, default=DemoSettings.num_test, help="number of held-out test phantoms")
    p.add_argument("--seed", type=int, default=DemoSettings.seed,
                   help="seed of the phantoms and of training (the same seed gives the same numbers, up to the CPU's "
                        "floating-point non-determinism)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for training and prediction (default: every core). On a machine busy with other "
                        "work, 1 avoids OpenMP's stalls and is faster")
    p.add_argument("--verbose", action="store_true", help="show the stages' full output (always in DIR/logs)")
    # a run through every stage in about a minute (tests): tiny phantoms, one epoch of two iterations per phase
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    return p


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    if args.minutes is not None and args.minutes < MIN_MINUTES:
        raise DemoError(f"--minutes {args.minutes:g} leaves no time for training: the data stages, prediction and "
                        f"evaluation alone take about {MIN_MINUTES:g} minutes; give at least {MIN_MINUTES:g}, or "
                        f"leave --minutes out")
    if args.threads is not None and args.threads < 1:
        raise DemoError(f"--threads {args.threads}: give 1 or more")
    settings = DemoSettings(minutes=args.minutes, dataset_id=args.d, num_training=args.n, num_test=args.t,
                            seed=args.seed, threads=args.threads)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(settings, key, value)
        settings.num_training, settings.num_test = min(args.n, SMOKE["num_training"]), min(args.t, SMOKE["num_test"])
    if settings.num_training < 2 or settings.num_test < 1:
        raise DemoError("the demo needs at least 2 training (-n) and 1 test (-t) phantoms")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 when done, 2 for misuse (refused before any work), 1 when a stage failed, 130 after Ctrl-C."""
    args = build_parser().parse_args(argv)

    def body() -> int:
        try:
            run_demo(args.o, settings_from_args(args), echo=args.verbose)
        except StageFailed as e:
            print(f"nnUNetv2_flare_demo: {e}", file=sys.stderr)
            return 1
        return 0

    return run_command("nnUNetv2_flare_demo", body)


if __name__ == "__main__":
    sys.exit(main())
