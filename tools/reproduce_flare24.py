"""The paper's recipe on FLARE24 Task 2, every step the command docs/reproduce-flare24.md gives, in order.

    python tools/reproduce_flare24.py --size miniature -o /tmp/recipe            # phantoms, CPU, a few minutes
    python tools/reproduce_flare24.py --size full -i FLARE-Task2-LaptopSeg -o /data/flare24   # GPU, days

Steps: (miniature: write a miniature release of phantoms) -> nnUNetv2_flare_convert -> plan and preprocess ->
train Phase 1 -> train Phase 2 on the labelled + pseudo-labelled cases -> 4 label-combining rounds, each: keep the
current organ model, nnUNetv2_flare_pseudolabel with it, fine-tune from it -> predict the validation cases on the
CPU -> FLARE's DSC / NSD. Each step runs as a subprocess; its command is printed and written to
OUTPUT/commands.sh, its output to OUTPUT/logs/<step>.log; OUTPUT/recipe_summary.json gets the steps' commands and
times. nnU-Net's folders go under OUTPUT unless nnUNet_raw / nnUNet_preprocessed / nnUNet_results are set.
`--from STEP` starts at a step (after an interruption: the earlier steps' outputs must be there).

The miniature run differs from the full one only where minutes on a CPU demand it: the demo's trainers (two
iterations per run, no augmentation), the narrow organ network at a coarse spacing with small patches
(configuration flare_organs_demo, added to the plans as nnUNetv2_flare_demo does), -device cpu, and the validation
cases predicted with PyTorch (OpenVINO first converts each network, which takes longer than predicting two phantoms).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nnunetv2_flare.demo import (
    DEMO_CONFIGURATION,
    DEMO_LOCATOR_CONFIGURATION,
    DEMO_LOCATOR_TRAINER,
    DEMO_ORGAN_TRAINER,
    SMOKE,
    DemoSettings,
    Stage,
    StageFailed,
    _command,
    _run_stage,
    add_demo_configuration,
    demo_environment,
)
from nnunetv2_flare.names import (
    CHECKPOINT,
    LOCATOR_CONFIGURATION,
    LOCATOR_TRAINER,
    MAX_EPOCHS_ENV,
    ORGAN_CONFIGURATION,
    ORGAN_TRAINER,
    PLANS,
)
from nnunetv2_flare.training.ext_trainer_path import ensure_ext_trainer_env

TOOLS = Path(__file__).resolve().parent
ROUNDS = 4  # the paper's Algorithm 1


@dataclass
class Step:
    name: str
    command: list[str]
    action: Callable[[], None] | None = field(default=None, repr=False)  # an in-process step (command: its summary)
    epochs: int | None = None


@dataclass
class Recipe:
    size: str
    dataset_id: int
    dataset_name: str
    steps: list[Step]
    env: dict[str, str]
    predictions: Path
    summary_file: Path


def miniature_settings() -> DemoSettings:
    return DemoSettings(**SMOKE)


def environment(output: Path, size: str) -> dict[str, str]:
    """The miniature run's: the demo's (seeded in-process data loading, two iterations per epoch); the full run's:
    nnU-Net's folders and the trainers on nnUNet_extTrainer, nothing else changed."""
    if size == "miniature":
        env = demo_environment(output, miniature_settings())
        env[MAX_EPOCHS_ENV] = "1"
        return env
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.setdefault(name, str(output / name))
    ensure_ext_trainer_env(env)
    return env


def build_recipe(size: str, output: Path, release: Path | None, dataset_id: int, device: str,
                 rounds: int = ROUNDS) -> Recipe:
    output = output.resolve()
    env = environment(output, size)
    name = f"Dataset{dataset_id:03d}_FLARE24"
    raw = Path(env["nnUNet_raw"]) / name
    results = Path(env["nnUNet_results"]) / name
    did = str(dataset_id)
    steps: list[Step] = []
    mini = size == "miniature"
    if mini:
        release = output / "release" / "FLARE-Task2-LaptopSeg"
        steps.append(Step("0_miniature_release",
                          [sys.executable, str(TOOLS / "make_flare24_miniature.py"), "-o", str(release.parent)]))
    assert release is not None
    steps.append(Step("1_convert", [_command("nnUNetv2_flare_convert"), "-i", str(release), "-d", did,
                                    "--disable_progress_bar"]))
    plan = [_command("nnUNetv2_flare_plan_and_preprocess"), "-d", did, "-np", "1" if mini else "8"]
    train_device = "cpu" if mini else device
    if mini:
        plans_file = Path(env["nnUNet_preprocessed"]) / name / f"{PLANS}.json"
        steps += [Step("2a_plan", plan + ["--no_pp"]),
                  Step("2b_miniature_configurations",
                       [f"(python) nnunetv2_flare.demo.add_demo_configuration: {DEMO_CONFIGURATION} and "
                        f"{DEMO_LOCATOR_CONFIGURATION} added to {plans_file}"],
                       action=lambda: add_demo_configuration(plans_file, miniature_settings())),
                  Step("2c_preprocess", plan + ["-c", LOCATOR_CONFIGURATION, DEMO_CONFIGURATION])]
        locator, organs = (DEMO_LOCATOR_TRAINER, DEMO_LOCATOR_CONFIGURATION), (DEMO_ORGAN_TRAINER, DEMO_CONFIGURATION)
    else:
        steps.append(Step("2_plan_and_preprocess", plan + ["-c", LOCATOR_CONFIGURATION, ORGAN_CONFIGURATION]))
        locator, organs = (LOCATOR_TRAINER, LOCATOR_CONFIGURATION), (ORGAN_TRAINER, ORGAN_CONFIGURATION)
    train = [_command("nnUNetv2_train"), did]
    steps.append(Step("3_train_phase1", train + [locator[1], "all", "-tr", locator[0], "-p", PLANS, "-device",
                                                 train_device], epochs=1 if mini else None))
    steps.append(Step("4_train_phase2", train + [organs[1], "all", "-tr", organs[0], "-p", PLANS, "-device",
                                                 train_device], epochs=1 if mini else None))
    model_name = f"{organs[0]}__{PLANS}__{organs[1]}"
    for k in range(1, rounds + 1):
        snapshot = results / "pseudolabel_models" / f"round{k - 1}"
        steps.append(Step(f"5.{k}a_keep_model", ["mkdir", "-p", str(snapshot)]))
        steps.append(Step(f"5.{k}b_keep_model", ["cp", "-r", str(results / model_name), str(snapshot) + "/"]))
        steps.append(Step(f"5.{k}c_pseudolabel_round{k}",
                          [_command("nnUNetv2_flare_pseudolabel"), "-d", did, "-m", str(snapshot / model_name),
                           "-f", "all", "--trusted", str(raw / "trusted_cases.txt"), "-device", train_device]))
        steps.append(Step(f"5.{k}d_finetune_round{k}",
                          train + [organs[1], "all", "-tr", organs[0], "-p", PLANS, "-device", train_device,
                                   "-pretrained_weights", str(snapshot / model_name / "fold_all" / CHECKPOINT)],
                          epochs=1 if mini else None))
    predictions = output / "predictions"
    steps.append(Step("6_predict_validation",
                      [_command("nnUNetv2_flare_predict"), "-i", str(raw / "imagesTs"), "-o", str(predictions),
                       "-d", did, "-tr1", locator[0], "-c1", locator[1], "-tr2", organs[0], "-c2", organs[1],
                       "-p", PLANS, "--disable_progress_bar"]
                      # OpenVINO would first convert both networks (~25 s each), more than the miniature predicts
                      + (["--backend", "torch"] if mini else [])))
    summary_file = output / "evaluation" / "summary_flare.json"
    steps.append(Step("7_evaluate", [_command("nnUNetv2_flare_evaluate"), "-ref", str(raw / "labelsTs"), "-pred",
                                     str(predictions), "-o", str(summary_file), "--disable_progress_bar"]))
    return Recipe(size, dataset_id, name, steps, env, predictions, summary_file)


def shown(command: list[str]) -> str:
    """The command as a user would type it: console scripts by name."""
    program = Path(command[0]).name
    first = program if command[0].startswith("/") and "python" not in program else command[0]
    return shlex.join([first, *command[1:]])


def run_recipe(recipe: Recipe, output: Path, start_at: str | None = None, echo: bool = False) -> dict:
    """Run the steps from `start_at` (a step name; default: the first) on; returns the summary it writes."""
    names = [s.name for s in recipe.steps]
    steps = recipe.steps[names.index(start_at):] if start_at else recipe.steps
    output.mkdir(parents=True, exist_ok=True)
    logs = output / "logs"
    transcript = output / "commands.sh"
    env_lines = [f"export {k}={shlex.quote(recipe.env[k])}"
                 for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")]
    transcript.write_text("#!/bin/sh\n# the commands of tools/reproduce_flare24.py --size " + recipe.size + "\nset -e\n"
                          + "\n".join(env_lines) + "\n")
    done = []
    start = time.perf_counter()
    for step in steps:
        with open(transcript, "a") as f:
            f.write((f"# {step.command[0]}" if step.action else shown(step.command)) + "\n")
        if step.action is not None:
            print(f"\n== {step.name}: {step.command[0]}", flush=True)
            t = time.perf_counter()
            step.action()
            done.append({"name": step.name, "command": step.command[0], "seconds": time.perf_counter() - t})
            continue
        stage = Stage(step.name, step.command)
        _run_stage(stage, recipe.env, logs, echo, step.epochs)
        done.append({"name": step.name, "command": shown(step.command), "seconds": stage.seconds, "log": stage.log})
    summary = {"size": recipe.size, "dataset": recipe.dataset_name, "steps": done,
               "total_seconds": time.perf_counter() - start,
               "folders": {k: recipe.env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
               | {"predictions": str(recipe.predictions), "evaluation": str(recipe.summary_file),
                  "commands": str(transcript)}}
    if recipe.summary_file.is_file():
        evaluation = json.loads(recipe.summary_file.read_text())
        summary["mean_DSC"], summary["mean_NSD"] = evaluation["mean_DSC"], evaluation["mean_NSD"]
    (output / "recipe_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nrecipe ({recipe.size}) done in {summary['total_seconds']:.0f} s; commands: {transcript}; summary: "
          f"{output / 'recipe_summary.json'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=["miniature", "full"], required=True,
                   help="miniature: a release of phantoms, CPU, the demo's short trainers; full: the release given "
                        "with -i and the paper's trainers (GPU)")
    p.add_argument("-i", default=None, help="FLARE24 Task 2 release (FLARE-Task2-LaptopSeg); --size full only")
    p.add_argument("-o", required=True, help="working folder: logs, commands.sh, predictions, nnU-Net's folders")
    p.add_argument("-d", type=int, default=None, help="dataset id (default 220 full, 950 miniature)")
    p.add_argument("-device", default="cuda", help="training and pseudo-label device of the full run (default cuda)")
    p.add_argument("--rounds", type=int, default=ROUNDS, help=f"label-combining rounds (default {ROUNDS}, the paper's)")
    p.add_argument("--from", dest="start_at", default=None, metavar="STEP", help="start at this step")
    p.add_argument("--verbose", action="store_true", help="show every step's full output (always in the logs)")
    args = p.parse_args(argv)
    if (args.size == "full") != (args.i is not None):
        p.error("-i RELEASE goes with --size full (and only with it)")
    output = Path(args.o).resolve()
    recipe = build_recipe(args.size, output, Path(args.i).resolve() if args.i else None,
                          args.d or (950 if args.size == "miniature" else 220), args.device, args.rounds)
    names = [s.name for s in recipe.steps]
    if args.start_at is not None and args.start_at not in names:
        p.error(f"--from {args.start_at}: no such step; the steps: {', '.join(names)}")
    try:
        run_recipe(recipe, output, args.start_at, args.verbose)
    except StageFailed as e:
        print(f"reproduce_flare24.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
