"""Both phases trained end to end with nnU-Net's own commands on a tiny generated dataset, on the CPU:
nnUNetv2_flare_plan_and_preprocess -> nnUNetv2_train (the _debug trainers) -> nnUNetv2_predict, each a subprocess
with the environment a user would have; plus the trainers' paper defaults and how nnU-Net finds them."""
from __future__ import annotations

import ast
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tiny_dataset import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
DATASET_ID = 220
LOCATOR_RESULT = "nnUNetTrainerFlareLocator_debug__FlarePlans__flare_locator"
ORGANS_RESULT = "nnUNetTrainerFlareOrgans_debug__FlarePlans__flare_organs_narrow"
TRAINER_NAMES = ("nnUNetTrainerFlareLocator", "nnUNetTrainerFlareOrgans", "nnUNetTrainerFlareLocator_debug",
                 "nnUNetTrainerFlareOrgans_debug", "nnUNetTrainerFlareLocator_5min", "nnUNetTrainerFlareOrgans_30min")


def _command(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"console script {name} not found on PATH: install the package (pip install -e .)")
    return path


def _run(args: list[str], env: dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run([_command(args[0]), *args[1:]], env=env, capture_output=True, encoding="utf-8",
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


def _user_env(root: Path) -> dict[str, str]:
    env = os.environ.copy()
    env.update({
        "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        # a small CPU: no augmentation workers, no torch.compile, one export / metrics worker
        "nnUNet_n_proc_DA": "0", "nnUNet_compile": "false", "nnUNet_def_n_proc": "1",
    })
    env.pop("nnUNet_extTrainer", None)
    # what the README tells users to do: export nnUNet_extTrainer=$(nnUNetv2_flare_ext_trainer_path)
    env["nnUNet_extTrainer"] = _run(["nnUNetv2_flare_ext_trainer_path"], env).strip()
    return env


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    raw = write_tiny_dataset(root / "raw", DATASET_ID, num_cases=3, num_test_cases=1)
    env = _user_env(root)
    _run(["nnUNetv2_flare_plan_and_preprocess", "-d", str(DATASET_ID), "-np", "1"], env)
    return {"root": root, "raw": raw, "env": env, "results": root / "results" / raw.name,
            "preprocessed": root / "preprocessed" / raw.name}


@pytest.fixture(scope="module")
def trained(preprocessed):
    env = preprocessed["env"]
    _run(["nnUNetv2_train", str(DATASET_ID), "flare_locator", "all", "-tr", "nnUNetTrainerFlareLocator_debug",
          "-p", "FlarePlans", "-device", "cpu"], env)
    _run(["nnUNetv2_train", str(DATASET_ID), "flare_organs_narrow", "all", "-tr", "nnUNetTrainerFlareOrgans_debug",
          "-p", "FlarePlans", "-device", "cpu"], env)
    return preprocessed


# --- how nnU-Net finds the trainers ---------------------------------------------------------------------------------

def test_trainer_folder_module_only_reexports():
    module = ROOT / "trainers" / "nnunetv2_flare_trainers.py"
    tree = ast.parse(module.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    imported = {alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                and node.module.startswith("nnunetv2_flare.training") for alias in node.names}
    assert set(TRAINER_NAMES) <= imported
    assert (ROOT / "trainers" / "__init__.py").read_text().strip() == ""


@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_nnunet_lookup_returns_the_package_class(name, monkeypatch):
    import importlib

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunetv2_flare.training.ext_trainer_path import ext_trainer_path
    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_path())
    found = recursive_find_trainer_class_by_name(name)
    assert found.__module__.startswith("nnunetv2_flare.training.")
    assert found is getattr(importlib.import_module(found.__module__), name)


def test_ext_trainer_path_command_and_environment(monkeypatch, tmp_path):
    from nnunetv2_flare.training.ext_trainer_path import ensure_ext_trainer_env, ext_trainer_path
    path = ext_trainer_path()
    assert Path(path).resolve() == (ROOT / "trainers").resolve()
    assert subprocess.run([_command("nnUNetv2_flare_ext_trainer_path")], capture_output=True, encoding="utf-8",
                          check=True).stdout.strip() == path
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    assert ensure_ext_trainer_env() == os.pathsep.join([path, str(tmp_path)])
    assert ensure_ext_trainer_env() == os.pathsep.join([path, str(tmp_path)])  # idempotent
    env = {}
    assert ensure_ext_trainer_env(env) == path and env["nnUNet_extTrainer"] == path


# --- paper defaults -------------------------------------------------------------------------------------------------

def test_cosine_schedule_matches_torch_cosine_annealing():
    from nnunetv2_flare.training.lr_schedulers import CosineAnnealingScheduler
    p = [torch.nn.Parameter(torch.zeros(1))]
    ours = CosineAnnealingScheduler(torch.optim.AdamW(p, lr=3e-4), 3e-4, 150)
    reference_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, T_max=150)
    for epoch in range(150):
        ours.step(epoch)  # how nnUNetTrainer.on_train_epoch_start calls it
        assert ours.get_last_lr()[0] == pytest.approx(reference_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        reference_opt.step()
        reference.step()
    ours.step(75)  # resuming: the epoch number alone decides
    assert ours.get_last_lr()[0] == pytest.approx(1.5e-4)


def _trainer(preprocessed, cls, configuration, monkeypatch, results: Path | None = None):
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed["root"] / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(results or preprocessed["root"] / "results_inprocess"))
    plans = json.loads((preprocessed["preprocessed"] / "FlarePlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((preprocessed["preprocessed"] / "dataset.json").read_text())
    return cls(plans, configuration, "all", dataset_json, torch.device("cpu"))


def test_paper_defaults(preprocessed, monkeypatch):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss

    from nnunetv2_flare.training.locator_trainer import nnUNetTrainerFlareLocator
    from nnunetv2_flare.training.organ_trainer import nnUNetTrainerFlareOrgans
    organs = _trainer(preprocessed, nnUNetTrainerFlareOrgans, "flare_organs", monkeypatch)
    assert organs.oversample_foreground_percent == pytest.approx(5 / 6)
    assert organs.configuration_manager.batch_size == 6
    locator = _trainer(preprocessed, nnUNetTrainerFlareLocator, "flare_locator", monkeypatch)
    assert locator.label_manager.num_segmentation_heads == 2
    for trainer in (organs, locator):
        assert (trainer.initial_lr, trainer.weight_decay, trainer.num_epochs) == (3e-4, 1e-5, 150)
    locator.initialize()
    assert isinstance(locator.optimizer, torch.optim.AdamW)
    assert locator.optimizer.param_groups[0]["weight_decay"] == 1e-5
    locator.lr_scheduler.step(149)
    assert 0 < locator.optimizer.param_groups[0]["lr"] < 1e-7
    dc_ce = locator.loss.loss  # inside nnU-Net's deep-supervision wrapper
    assert isinstance(dc_ce, DC_and_CE_loss) and dc_ce.weight_ce == dc_ce.weight_dice == 1


def test_flare_organs_builds_the_full_network_from_plans(preprocessed, monkeypatch):
    from nnunetv2_flare.networks import FlareOrganNet
    from nnunetv2_flare.training.organ_trainer import nnUNetTrainerFlareOrgans
    trainer = _trainer(preprocessed, nnUNetTrainerFlareOrgans, "flare_organs", monkeypatch)
    net = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1,
                                             trainer.label_manager.num_segmentation_heads, True)
    assert isinstance(net, FlareOrganNet)
    assert sum(p.numel() for n, p in net.named_parameters() if "ds_heads" not in n) == 9_373_994
    assert net.decoder.classifier.out_channels == 14


def test_trainer_refuses_the_other_phase(preprocessed, monkeypatch):
    from nnunetv2_flare.training.locator_trainer import nnUNetTrainerFlareLocator
    from nnunetv2_flare.training.organ_trainer import nnUNetTrainerFlareOrgans
    with pytest.raises(ValueError, match="-tr nnUNetTrainerFlareLocator with flare_locator"):
        _trainer(preprocessed, nnUNetTrainerFlareLocator, "flare_organs", monkeypatch)
    with pytest.raises(ValueError, match="FlareOrganPreprocessor"):
        _trainer(preprocessed, nnUNetTrainerFlareOrgans, "flare_locator", monkeypatch)


def test_time_boxed_trainer_fits_its_epochs_to_the_budget(preprocessed, monkeypatch):
    from nnunetv2_flare.training.short_run_trainers import nnUNetTrainerFlareLocator_5min
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_compile", "false")
    from nnunetv2_flare.training.time_boxed import END_RESERVE_S
    trainer = _trainer(preprocessed, nnUNetTrainerFlareLocator_5min, "flare_locator", monkeypatch)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.save_every) == (150, 10, 1)
    trainer.on_train_start()
    assert trainer.time_box_deadline == pytest.approx(time.time() + 300, abs=60)
    # three epochs done, the first slowed by the data loaders' warm-up: the median of the real times (10 s) plans
    # the rest; 35 s left: three more fit, and the cosine schedule is stretched to six
    trainer.current_epoch = 3
    trainer.epoch_seconds()[:] = [31.0, 10.0, 9.0]
    trainer.time_box_deadline = time.time() + 35 + END_RESERVE_S
    assert trainer.seconds_per_epoch() == 10.0
    assert trainer.plan_remaining_epochs() == 6
    assert trainer.num_epochs == 6 and trainer.lr_scheduler.max_steps == 6
    trainer.time_box_deadline = time.time() - 1  # past the deadline: stop after the epochs done
    assert trainer.plan_remaining_epochs() == 3


def test_debug_organ_trainer_validates_two_cases(preprocessed, monkeypatch):
    from nnunetv2_flare.training.short_run_trainers import nnUNetTrainerFlareOrgans_debug
    trainer = _trainer(preprocessed, nnUNetTrainerFlareOrgans_debug, "flare_organs_narrow", monkeypatch)
    train, validation = trainer.do_split()
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (preprocessed["raw"] / "labelsTr").glob("*.nii.gz"))
    assert sorted(train) == cases and validation == sorted(cases)[:2]


def test_time_boxed_checkpoints_survive_a_kill_while_saving(preprocessed, monkeypatch, tmp_path):
    from nnunetv2_flare.training.short_run_trainers import nnUNetTrainerFlareLocator_5min
    monkeypatch.setenv("nnUNet_compile", "false")
    trainer = _trainer(preprocessed, nnUNetTrainerFlareLocator_5min, "flare_locator", monkeypatch, tmp_path)
    trainer.initialize()
    (tmp_path / "fold").mkdir()
    latest = tmp_path / "fold" / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(latest))
    saved = latest.read_bytes()
    assert torch.load(latest, map_location="cpu", weights_only=False)["trainer_name"] == trainer.__class__.__name__

    def killed_half_way(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt("SIGTERM while saving")

    monkeypatch.setattr(torch, "save", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(str(latest))
    assert latest.read_bytes() == saved and [p.name for p in latest.parent.iterdir()] == [latest.name]


class _FakeClock:
    """Training time without waiting: every training iteration advances the clock by `step_s`."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 1_000_000.0, step_s

    def __call__(self) -> float:
        return self.now


class _Stop(Exception):
    pass


def _clocked_trainer(preprocessed, cls, monkeypatch, results: Path, clock: _FakeClock, stop_at: int | None):
    """A time-boxed trainer on the fake clock whose steps only advance the clock (nnU-Net's loop, schedule,
    checkpoints and resuming are what is tested, not learning); it records each epoch's learning rate and stops (like
    a killed process, without saving) when epoch `stop_at` would start."""
    trainer = _trainer(preprocessed, cls, "flare_locator", monkeypatch, results)
    trainer.clock = clock
    trainer.time_budget_s = 100.0  # 5 epochs of 20 s less the end reserve: 4
    trainer.logger.plot_progress_png = lambda folder: None
    trainer.get_dataloaders = lambda: (itertools.repeat(None), itertools.repeat(None))
    trainer.learning_rates = {}
    epoch_start, train_epoch_start = trainer.on_epoch_start, trainer.on_train_epoch_start

    def train_step(batch):
        clock.now += clock.step_s
        return {"loss": np.array(1.0)}

    def validation_step(batch):
        return {"loss": np.array(1.0), "tp_hard": np.ones(1), "fp_hard": np.zeros(1), "fn_hard": np.zeros(1)}

    def on_epoch_start():
        if trainer.current_epoch == stop_at:
            raise _Stop
        epoch_start()

    def on_train_epoch_start():
        train_epoch_start()
        trainer.learning_rates[trainer.current_epoch] = trainer.optimizer.param_groups[0]["lr"]

    trainer.train_step, trainer.validation_step = train_step, validation_step
    trainer.on_epoch_start, trainer.on_train_epoch_start = on_epoch_start, on_train_epoch_start
    return trainer


def test_time_boxed_run_resumes_at_its_epoch_learning_rate_and_budget(preprocessed, monkeypatch, tmp_path):
    """A 100-second run of 20-second epochs stopped during epoch 2, then continued as `nnUNetv2_train ... --c` does
    (nnU-Net's own maybe_load_checkpoint) an hour later: checkpoint_latest of epoch 1 is there, the run goes on at
    epoch 2 with the learning rate the schedule had there, plans with the real epoch times and ends when the
    100 seconds of training are spent, at the same epoch the uninterrupted plan had."""
    from nnunetv2.run.run_training import maybe_load_checkpoint

    from nnunetv2_flare.names import ITERATIONS_ENV
    from nnunetv2_flare.training.lr_schedulers import warmup_cosine_lr
    from nnunetv2_flare.training.short_run_trainers import nnUNetTrainerFlareLocator_5min
    from nnunetv2_flare.training.time_boxed import END_RESERVE_S
    monkeypatch.setenv("nnUNet_compile", "false")
    monkeypatch.setenv(ITERATIONS_ENV, "1")
    clock = _FakeClock(step_s=20.0)
    first = _clocked_trainer(preprocessed, nnUNetTrainerFlareLocator_5min, monkeypatch, tmp_path, clock, stop_at=2)
    with pytest.raises(_Stop):
        first.run_training()
    # 100 s, 20 s an epoch, 5 s kept for the end: 4 epochs, planned after each epoch and never changed
    expected_total = int((100 - END_RESERVE_S) // 20)
    assert first.num_epochs == first.lr_scheduler.max_steps == expected_total == 4
    latest = Path(first.output_folder) / "checkpoint_latest.pth"
    saved = torch.load(latest, map_location="cpu", weights_only=False)
    assert saved["current_epoch"] == 2 and saved["logging"]["time_box_epoch_seconds"] == [20.0, 20.0]

    clock.now += 3600.0  # an hour between the runs costs no training time
    second = _clocked_trainer(preprocessed, nnUNetTrainerFlareLocator_5min, monkeypatch, tmp_path, clock,
                              stop_at=None)
    maybe_load_checkpoint(second, continue_training=True, validation_only=False)
    assert second.current_epoch == 2
    resumed_at = clock.now
    second.run_training()
    assert second.time_box_deadline == resumed_at + 100 - 40
    assert sorted(second.learning_rates) == [2, 3]
    assert second.learning_rates[2] == pytest.approx(warmup_cosine_lr(first.initial_lr, 2, expected_total))
    assert second.learning_rates[2] < first.learning_rates[1]  # the schedule goes on, it does not start over
    final = torch.load(Path(second.output_folder) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == expected_total and not latest.exists()
    assert sum(final["logging"]["time_box_epoch_seconds"]) == pytest.approx(20.0 * expected_total)

    # --c on the finished run: no time is left, so no epoch is trained again
    third = _clocked_trainer(preprocessed, nnUNetTrainerFlareLocator_5min, monkeypatch, tmp_path, clock,
                             stop_at=None)
    maybe_load_checkpoint(third, continue_training=True, validation_only=False)
    third.run_training()
    assert third.learning_rates == {} and third.current_epoch == expected_total


# --- end to end -----------------------------------------------------------------------------------------------------

def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
            and np.allclose(a.GetOrigin(), b.GetOrigin()))


def test_preprocessed_layout(preprocessed):
    pre = preprocessed["preprocessed"]
    assert (pre / "FlarePlans.json").is_file() and (pre / "dataset_fingerprint.json").is_file()
    for identifier in ("FlarePlans_flare_locator", "FlarePlans_flare_organs"):
        assert len(list((pre / identifier).glob("*_seg.b2nd"))) == 3
    assert not (pre / "FlarePlans_flare_organs_narrow").exists()  # narrow shares flare_organs' data
    for reference in (pre / "gt_segmentations_abdomen").glob("*.nii.gz"):
        binary, _ = _read(reference)
        full, _ = _read(pre / "gt_segmentations" / reference.name)
        np.testing.assert_array_equal(binary, (full > 0).astype(binary.dtype))


def test_locator_training_outputs(trained):
    folder = trained["results"] / LOCATOR_RESULT
    checkpoint = torch.load(folder / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerFlareLocator_debug"
    assert checkpoint["current_epoch"] == 2
    assert json.loads((folder / "dataset.json").read_text())["labels"] == {"background": 0, "abdomen": 1}
    raw = trained["raw"]
    for label_file in sorted((raw / "labelsTr").glob("*.nii.gz")):
        prediction, pred_image = _read(folder / "fold_all" / "validation" / label_file.name)
        reference, ref_image = _read(label_file)
        assert _same_grid(pred_image, ref_image), "locator validation must be written at the original size"
        assert set(np.unique(prediction)) <= {0, 1}
    summary = json.loads((folder / "fold_all" / "validation" / "summary.json").read_text())
    assert all("gt_segmentations_abdomen" in case["reference_file"] for case in summary["metric_per_case"])
    assert list(summary["mean"]) == ["1"]


def test_locator_is_scored_against_the_abdomen_as_its_log_says(trained, tmp_path):
    """The command the locator's validation prints (nnUNetv2_evaluate_folder on the binarized references) gives the
    trainer's own validation Dice, here on the validation of fold 'all' copied into a cross-validation folder."""
    folder = trained["results"] / LOCATOR_RESULT
    log = "".join(p.read_text() for p in (folder / "fold_all").glob("training_log_*.txt"))
    references = trained["preprocessed"] / "gt_segmentations_abdomen"
    assert f"nnUNetv2_evaluate_folder {references} FOLDER -djfile {folder}/dataset.json" in " ".join(log.split())
    crossval = tmp_path / "crossval"
    crossval.mkdir()
    for f in (folder / "fold_all" / "validation").glob("*.nii.gz"):
        shutil.copy(f, crossval / f.name)
    _run(["nnUNetv2_evaluate_folder", str(references), str(crossval), "-djfile", str(folder / "dataset.json"),
          "-pfile", str(folder / "plans.json"), "-o", str(tmp_path / "summary.json"), "-np", "1", "--chill"],
         trained["env"])
    ours = json.loads((tmp_path / "summary.json").read_text())
    trainers = json.loads((folder / "fold_all" / "validation" / "summary.json").read_text())
    assert ours["foreground_mean"]["Dice"] == pytest.approx(trainers["foreground_mean"]["Dice"], abs=1e-9)
    assert len(ours["metric_per_case"]) == len(list((trained["raw"] / "labelsTr").glob("*.nii.gz")))


def test_organ_training_outputs(trained):
    folder = trained["results"] / ORGANS_RESULT
    checkpoint = torch.load(folder / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerFlareOrgans_debug"
    assert json.loads((folder / "dataset.json").read_text())["labels"]["left_kidney"] == 13
    validated = sorted((folder / "fold_all" / "validation").glob("*.nii.gz"))
    assert [p.name for p in validated] == [p.name for p in sorted((trained["raw"] / "labelsTr").glob("*.nii.gz"))][:2]
    for prediction_file in validated:
        prediction, pred_image = _read(prediction_file)
        _, ref_image = _read(trained["raw"] / "labelsTr" / prediction_file.name)
        assert _same_grid(pred_image, ref_image)
        assert set(np.unique(prediction)) <= set(range(14))
    summary = json.loads((folder / "fold_all" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {str(i) for i in range(1, 14)}


@pytest.mark.parametrize("result", [LOCATOR_RESULT, ORGANS_RESULT])
def test_results_load_generically(trained, result):
    """How the cascade loads a phase: plans.json architecture, checkpoint_final.pth's network_weights."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    folder = trained["results"] / result
    configuration_name = result.split("__")[-1]
    plans = json.loads((folder / "plans.json").read_text())
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    cm = PlansManager(plans).get_configuration(configuration_name)
    num_classes = len(json.loads((folder / "dataset.json").read_text())["labels"])
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, num_classes, deep_supervision=False)
    weights = torch.load(folder / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    net.load_state_dict(weights)  # strict
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 1, *cm.patch_size if configuration_name == "flare_locator" else (32,) * 3))
    assert out.shape[1] == num_classes


@pytest.mark.parametrize("result, configuration, trainer, labels", [
    (LOCATOR_RESULT, "flare_locator", "nnUNetTrainerFlareLocator_debug", {0, 1}),
    (ORGANS_RESULT, "flare_organs_narrow", "nnUNetTrainerFlareOrgans_debug", set(range(14))),
])
def test_nnunetv2_predict_on_each_phase(trained, tmp_path, result, configuration, trainer, labels):
    images = trained["raw"] / "imagesTs"
    _run(["nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path), "-d", str(DATASET_ID), "-c", configuration,
          "-tr", trainer, "-p", "FlarePlans", "-f", "all", "-device", "cpu", "-npp", "1", "-nps", "1",
          "--disable_tta"], trained["env"])
    for image_file in images.glob("*_0000.nii.gz"):
        prediction, pred_image = _read(tmp_path / image_file.name.replace("_0000.nii.gz", ".nii.gz"))
        _, image = _read(image_file)
        assert _same_grid(pred_image, image)
        assert set(np.unique(prediction)) <= labels
