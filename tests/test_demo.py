"""nnUNetv2_flare_demo: a shortened run (--smoke: tiny phantoms, one epoch of two iterations per phase) through every
stage as a subprocess of the installed command, then each stage's outputs; and the pieces of the time box."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2_flare.demo import (
    DEMO_CONFIGURATION,
    DEMO_LOCATOR_CONFIGURATION,
    DEMO_LOCATOR_TRAINER,
    DEMO_ORGAN_TRAINER,
    DemoError,
    DemoSettings,
    add_demo_configuration,
    build_parser,
    check_dataset_id_free,
    demo_environment,
    run_demo,
    settings_from_args,
)
from nnunetv2_flare.inference.core.settings import FOLLOW_ORGANS_ROUNDS
from nnunetv2_flare.labels import FLARE_ORGANS
from nnunetv2_flare.names import MAX_EPOCHS_ENV, SEED_ENV
from nnunetv2_flare.training.lr_schedulers import cosine_lr, warmup_cosine_lr
from nnunetv2_flare.training.time_boxed import epochs_that_fit

DATASET = "Dataset900_FlarePhantoms"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "flare_demo"
    command = shutil.which("nnUNetv2_flare_demo")
    assert command, "nnUNetv2_flare_demo is not on PATH: pip install -e . in the repository"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("nnUNet_raw", "nnUNet_preprocessed",
                                                                     "nnUNet_results", "nnUNetFlare_demo"))}
    env["OMP_NUM_THREADS"] = "2"
    done = subprocess.run([command, "--smoke", "-o", str(out)], env=env, capture_output=True, encoding="utf-8",
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout + done.stderr  # the progress bars are on stderr


def test_smoke_demo_writes_every_stage(smoke_run: tuple[Path, str]) -> None:
    out, stdout = smoke_run
    raw = out / "nnUNet_raw" / DATASET
    # 1 phantoms
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == 3
    assert len(list((raw / "imagesTr").glob("*.nii.gz"))) == 3 and len(list((raw / "labelsTs").glob("*.nii.gz"))) == 1
    # 2 plans with the demo configuration, preprocessed data of both phases
    pre = out / "nnUNet_preprocessed" / DATASET
    plans = json.loads((pre / "FlarePlans.json").read_text())
    demo_cfg = plans["configurations"][DEMO_CONFIGURATION]
    assert demo_cfg["inherits_from"] == "flare_organs_narrow"
    for identifier in ("FlarePlans_flare_locator", f"FlarePlans_{DEMO_CONFIGURATION}"):
        assert len(list((pre / identifier).glob("*.pkl"))) == 3, identifier
    # 3, 4 checkpoints of both phases; nnU-Net's final validation skipped
    results = out / "nnUNet_results" / DATASET
    for trainer, cfg in ((DEMO_LOCATOR_TRAINER, DEMO_LOCATOR_CONFIGURATION), (DEMO_ORGAN_TRAINER, DEMO_CONFIGURATION)):
        fold = results / f"{trainer}__FlarePlans__{cfg}" / "fold_all"
        checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert checkpoint["current_epoch"] == 1  # the smoke run's single epoch
        assert not (fold / "validation").exists()
        assert (fold / "progress.png").is_file()  # drawn once, at the end
    # 5 predictions on the input grid, labels within 0..13
    prediction = sitk.ReadImage(str(out / "predictions" / "phantomTs_0000.nii.gz"))
    image = sitk.ReadImage(str(raw / "imagesTs" / "phantomTs_0000_0000.nii.gz"))
    assert prediction.GetSize() == image.GetSize()
    assert np.allclose(prediction.GetSpacing(), image.GetSpacing())
    assert np.allclose(prediction.GetOrigin(), image.GetOrigin())
    assert np.allclose(prediction.GetDirection(), image.GetDirection())
    assert sitk.GetArrayViewFromImage(prediction).max() <= 13
    predict_settings = json.loads((out / "prediction_report.json").read_text())["settings"]
    assert predict_settings["restore"] == "linear" and predict_settings["follow_organs"] == FOLLOW_ORGANS_ROUNDS
    assert predict_settings["shift_tta"] is True and predict_settings["tta"] is False
    # 6 evaluation summary with all 13 organs; the demo summary with timings of every stage
    summary = json.loads((out / "summary_flare.json").read_text())
    assert set(summary["per_organ"]["DSC"]) == set(FLARE_ORGANS.values())
    assert all(0.0 <= v <= 1.0 for v in summary["per_organ"]["NSD"].values())
    demo = json.loads((out / "demo_summary.json").read_text())
    assert [s["name"] for s in demo["stages"]] == ["1_phantoms", "2a_plan", "2b_preprocess", "3_train_locator",
                                                   "4_train_organs", "5_predict", "6_evaluate"]
    assert all(s["seconds"] > 0 and Path(s["log"]).is_file() for s in demo["stages"])
    assert demo["mean_DSC"] == summary["mean_DSC"]
    assert demo["estimate"]["step_seconds"]["organs"] > 0 and demo["estimate"]["total_s"] > 0
    assert "on this machine: about" in stdout and "estimated up front" in stdout
    assert demo["training"]["organs"]["epochs"] == 1 and demo["training"]["organs"]["iterations"] == 2
    # what the terminal shows: honest label, the narrow network named, the table and where things are
    assert "PHANTOM RESULTS" in stdout and "flare_organs_narrow" in stdout and "2 for Phase 2" in stdout
    assert "mean over cases" in stdout and "stage timings" in stdout and str(out / "predictions") in stdout
    # the picture of a held-out case: reference and prediction rows in organ colours
    picture = out / "demo_case.png"
    assert str(picture) in stdout and demo["folders"]["picture"] == str(picture)
    import matplotlib.image
    pixels = (matplotlib.image.imread(picture)[..., :3] * 255).round().astype(int)
    from nnunetv2_flare.inference.outputs.label_colors import label_colors
    liver = np.asarray(label_colors(FLARE_ORGANS)[1])
    assert (np.abs(pixels - liver).sum(-1) < 30).sum() > 20   # the reference's liver in the legend and the overlay
    # a progress bar per training phase
    assert "3_train_locator" in stdout and "epoch" in stdout


def test_environment_keeps_user_folders_and_sets_trainers(tmp_path: Path) -> None:
    env = demo_environment(tmp_path, DemoSettings(), base={"nnUNet_raw": "/data/raw", "PATH": "/bin"})
    assert env["nnUNet_raw"] == "/data/raw"
    assert env["nnUNet_results"] == str(tmp_path / "nnUNet_results")
    from nnunetv2_flare.training.ext_trainer_path import ext_trainer_path
    assert env["nnUNet_extTrainer"].split(os.pathsep)[0] == ext_trainer_path()
    assert env["nnUNet_n_proc_DA"] == "0"  # in-process loading: seeded sampling, no worker competing for 2 cores
    assert env[SEED_ENV] == "0"


def test_openmp_threads_sleep_only_beside_other_work(monkeypatch) -> None:
    """Spinning threads are faster alone and stall beside a busy process (docs/demo.md, "Sharing the CPU")."""
    import nnunetv2_flare.demo as demo
    real = demo._cpu_times()  # this machine's /proc/stat, where it has one
    assert real is None or real[1] >= real[0] > 0
    monkeypatch.setattr(demo.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: None)
    samples = iter([(100, 1000), (100 + 190, 1000 + 200)])  # 2 cores: 5 % busy over the second
    monkeypatch.setattr(demo, "_cpu_times", lambda: next(samples))
    assert not demo.share_the_cpu(env := {"PATH": "/bin"}) and "OMP_WAIT_POLICY" not in env
    samples = iter([(100, 1000), (100 + 50, 1000 + 200)])  # 75 % of 2 cores busy: 1.5 cores
    monkeypatch.setattr(demo, "_cpu_times", lambda: next(samples))
    assert demo.share_the_cpu(env) and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert not demo.share_the_cpu(mine := {"OMP_WAIT_POLICY": "ACTIVE"})  # the user's own setting wins
    assert mine["OMP_WAIT_POLICY"] == "ACTIVE"


def test_refuses_a_dataset_id_held_by_another_dataset(tmp_path: Path) -> None:
    (tmp_path / "raw" / "Dataset900_Other").mkdir(parents=True)
    env = {"nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "p"),
           "nnUNet_results": str(tmp_path / "r")}
    with pytest.raises(DemoError, match="choose a free id with -d"):
        check_dataset_id_free(env, 900, DATASET)
    check_dataset_id_free(env, 901, "Dataset901_FlarePhantoms")


def test_demo_configuration_is_added_and_resolved_by_nnunet(tmp_path: Path) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_flare.planning.templates import load_plans_template
    plans_file = tmp_path / "FlarePlans.json"
    plans_file.write_text(json.dumps(load_plans_template()))
    settings = DemoSettings(organ_spacing=(5.0, 4.0, 4.0), organ_patch_size=(32, 48, 48))
    add_demo_configuration(plans_file, settings)
    cfg = PlansManager(str(plans_file)).get_configuration(DEMO_CONFIGURATION)
    assert cfg.spacing == [5.0, 4.0, 4.0] and cfg.patch_size == [32, 48, 48]
    assert cfg.network_arch_init_kwargs["features_per_stage"] == [24, 48, 96, 192]  # the narrow network
    assert cfg.configuration["flare_training_preprocessor"] == "FlareOrganPreprocessor"
    assert cfg.data_identifier != PlansManager(str(plans_file)).get_configuration("flare_organs").data_identifier
    assert cfg.network_arch_init_kwargs["drop_path_rate"] == 0.0
    # the demo's locator: flare_locator's network and data, without stochastic depth
    locator = PlansManager(str(plans_file)).get_configuration(DEMO_LOCATOR_CONFIGURATION)
    paper_locator = PlansManager(str(plans_file)).get_configuration("flare_locator")
    assert locator.data_identifier == paper_locator.data_identifier
    assert locator.configuration["flare_training_preprocessor"] == "FlareLocatorPreprocessor"
    assert locator.network_arch_init_kwargs["drop_path_rate"] == 0.0
    assert paper_locator.network_arch_init_kwargs["drop_path_rate"] > 0
    assert {k: v for k, v in locator.network_arch_init_kwargs.items() if k != "drop_path_rate"} == \
        {k: v for k, v in paper_locator.network_arch_init_kwargs.items() if k != "drop_path_rate"}


def test_time_box_plans_epochs_from_measured_time() -> None:
    assert epochs_that_fit(2, 10.0, 35.0, 1000) == 5
    assert epochs_that_fit(2, 10.0, -5.0, 1000) == 2      # past the deadline: stop now
    assert epochs_that_fit(2, 10.0, 1e6, 7) == 7          # never beyond the cap


def test_cli_rejects_too_few_cases() -> None:
    with pytest.raises(DemoError, match="at least 2 training"):
        settings_from_args(build_parser().parse_args(["-n", "1"]))
    smoke = settings_from_args(build_parser().parse_args(["--smoke"]))
    assert smoke.shape == "tiny" and smoke.organ_iterations == 2 and smoke.num_training == 3


def test_default_budget_is_iterations_not_wall_time() -> None:
    settings = settings_from_args(build_parser().parse_args([]))
    assert settings.minutes is None
    assert settings.epochs(settings.organ_iterations) * settings.iterations_per_epoch == settings.organ_iterations
    # the estimate printed up front reads the machine: every stage in proportion to its timed training steps
    from nnunetv2_flare.demo_timing import StepSeconds
    one, twice = settings.estimated_seconds(StepSeconds(0.6, 0.3)), settings.estimated_seconds(StepSeconds(1.2, 0.6))
    assert set(one) == {"phantoms", "plan", "preprocess", "train_locator", "train_organs", "predict", "evaluate"}
    assert all(v > 0 for v in one.values()) and sum(twice.values()) == pytest.approx(2 * sum(one.values()))
    assert one["train_organs"] > one["train_locator"] > one["predict"]


def test_refuses_a_cap_too_short_to_train_before_any_work(tmp_path: Path) -> None:
    command = shutil.which("nnUNetv2_flare_demo")
    done = subprocess.run([command, "--minutes", "1", "-o", str(tmp_path / "out")], capture_output=True,
                          encoding="utf-8", timeout=120)
    assert done.returncode != 0 and "--minutes 1 leaves no time for training" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_refuses_an_output_folder_that_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    with pytest.raises(DemoError, match="is a file"):
        run_demo(a_file, settings_from_args(build_parser().parse_args(["--smoke"])))
    assert a_file.read_text() == "keep me"


def test_warmup_then_cosine() -> None:
    lrs = [warmup_cosine_lr(1.0, step, 10, warmup_steps=2) for step in range(10)]
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))       # annealing after the warm-up
    assert warmup_cosine_lr(1.0, 10, 10, warmup_steps=2) == pytest.approx(0.0)
    assert [warmup_cosine_lr(1.0, s, 10) for s in range(10)] == \
        pytest.approx([cosine_lr(1.0, s, 10) for s in range(10)])


def test_same_seed_trains_the_same_model(smoke_run: tuple[Path, str], tmp_path: Path) -> None:
    """Phase 2 trained again from the smoke run's preprocessed data with the same seed gives the same weights; another
    seed gives other weights."""
    out, _ = smoke_run
    first = out / "nnUNet_results" / DATASET / f"{DEMO_ORGAN_TRAINER}__FlarePlans__{DEMO_CONFIGURATION}" / "fold_all"
    settings = settings_from_args(build_parser().parse_args(["--smoke"]))

    def train(seed: int) -> dict:
        settings.seed = seed
        env = demo_environment(out, settings, base={**os.environ, "nnUNet_results": str(tmp_path / f"r{seed}"),
                                                    "nnUNet_raw": str(out / "nnUNet_raw"),
                                                    "nnUNet_preprocessed": str(out / "nnUNet_preprocessed"),
                                                    "OMP_NUM_THREADS": "2"})
        env[MAX_EPOCHS_ENV] = "1"
        done = subprocess.run([shutil.which("nnUNetv2_train"), "900", DEMO_CONFIGURATION, "all", "-p", "FlarePlans",
                               "-tr", DEMO_ORGAN_TRAINER, "-device", "cpu"], env=env, capture_output=True,
                              encoding="utf-8", timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        folder = tmp_path / f"r{seed}" / DATASET / first.parent.name / "fold_all"
        return torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]

    reference = torch.load(first / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    again, other = train(0), train(1)
    assert all(torch.allclose(reference[k].float(), again[k].float(), atol=1e-5) for k in reference)
    assert not all(torch.allclose(reference[k].float(), other[k].float(), atol=1e-5) for k in reference)


def test_the_progress_plot_is_drawn_at_the_end_only(tmp_path: Path) -> None:
    from nnunetv2_flare.training.demo_trainers import PlotAtEndLogger
    logger = PlotAtEndLogger(str(tmp_path), False)
    for epoch in range(3):
        for key, value in (("mean_fg_dice", 0.5), ("ema_fg_dice", 0.5), ("dice_per_class_or_region", [0.5]),
                           ("train_losses", 0.1), ("val_losses", 0.2), ("lrs", 1e-3),
                           ("epoch_start_timestamps", epoch), ("epoch_end_timestamps", epoch + 1)):
            logger.log(key, value, epoch)
        logger.plot_progress_png(str(tmp_path))  # what nnU-Net calls after every epoch
    assert not (tmp_path / "progress.png").exists()
    logger.plot_final(str(tmp_path))
    assert (tmp_path / "progress.png").is_file()

