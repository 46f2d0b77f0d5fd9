"""Windows of the organ network: any-window training (the loader draws a shape per batch within a voxel budget, the
checkpoint records the range) and prediction with windows fitted to the crop (cover every voxel, the fewest
windows, the choice follows the checkpoint, a fixed-patch model forced to fit warns)."""
from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from cascade_oracles import SMALL_CASCADE
from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings
from nnunetv2_flare.inference.core.sliding_window import sliding_window_labels, tile_count, tile_starts
from nnunetv2_flare.inference.geometry import VoxelGrid
from nnunetv2_flare.names import WINDOW_CHECKPOINT_KEY
from nnunetv2_flare.phantoms import make_phantom
from nnunetv2_flare.window_shapes import WindowRange, fitted_window
from tiny_dataset import write_tiny_dataset
from tool_modules import load_tool

write_random_cascade = load_tool("random_models").write_random_cascade

DATASET_ID = 223
ANY_WINDOW_TRAINERS = ("nnUNetTrainerFlareOrgansAnyWindow", "nnUNetTrainerFlareOrgansAnyWindow_debug",
                       "nnUNetTrainerFlareOrgansAnyWindow_demo")
PAPER_RANGE = WindowRange.around((96, 96, 96), 16, 6)
SMALL_RANGE = WindowRange.around(SMALL_CASCADE["organ_patch_size"], 16, 2)


# --- the range and its draws ----------------------------------------------------------------------------------------

def test_the_range_around_the_paper_patch() -> None:
    assert PAPER_RANGE == WindowRange((32, 32, 32), (288, 288, 288), 6 * 96 ** 3, 16)
    assert WindowRange.from_dict(json.loads(json.dumps(PAPER_RANGE.to_dict()))) == PAPER_RANGE
    assert PAPER_RANGE.permuted((2, 0, 1)) == PAPER_RANGE
    uneven = WindowRange((32, 48, 64), (64, 96, 128), 10 ** 6, 16)
    assert uneven.permuted((2, 0, 1)).minimum == (64, 32, 48)
    with pytest.raises(ValueError, match="multiples of the stride"):
        WindowRange((30, 32, 32), (64, 64, 64), 10 ** 6, 16)
    with pytest.raises(ValueError, match="below the smallest window"):
        WindowRange((32, 32, 32), (64, 64, 64), 1000, 16)


def test_drawn_windows_vary_within_the_range_and_the_voxel_budget() -> None:
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(300):
        shape, batch = PAPER_RANGE.draw(rng, max_batch=6)
        assert all(lo <= s <= hi and s % 16 == 0 for s, lo, hi in zip(shape, PAPER_RANGE.minimum, PAPER_RANGE.maximum))
        assert 1 <= batch <= 6 and batch * math.prod(shape) <= PAPER_RANGE.max_voxels
        shapes.add(shape)
    assert len(shapes) > 100
    assert PAPER_RANGE.clipped_to((288, 64, 32), (50, 300, 10)) == (64, 64, 32)  # data extent, never below minimum


# --- fitted windows -------------------------------------------------------------------------------------------------

class _Visits:
    """A labels model that marks every voxel of every window it sees."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, x: np.ndarray, grid: VoxelGrid) -> np.ndarray:
        self.shapes.append(x.shape[2:])
        return np.ones(x.shape[2:], dtype=np.uint8)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.integers(5, 260)] * 3), st.sampled_from([PAPER_RANGE, SMALL_RANGE,
                                                                WindowRange((32, 48, 32), (64, 96, 160), 150_000, 16)]))
def test_fitted_windows_cover_every_voxel_within_the_range(shape, window_range) -> None:
    window = fitted_window(shape, window_range)
    assert all(lo <= w <= hi and w % 16 == 0 for w, lo, hi in zip(window, window_range.minimum, window_range.maximum))
    assert math.prod(window) <= window_range.max_voxels
    padded = tuple(max(n, w) for n, w in zip(shape, window))
    model = _Visits()
    labels = sliding_window_labels(np.zeros(padded, np.float32), window, model, lambda start: None, progress=False)
    assert labels.all()  # every voxel written by some window
    assert set(model.shapes) == {window} and len(model.shapes) == tile_count(padded, window)


@settings(max_examples=40, deadline=None)
@given(st.tuples(*[st.integers(5, 200)] * 3))
def test_fitted_windows_are_the_fewest(shape) -> None:
    """No window shape in the range covers the crop with fewer windows (brute force over every shape)."""
    r = SMALL_RANGE if max(shape) < 120 else PAPER_RANGE
    window = fitted_window(shape, r)

    def count(w):
        return math.prod(len(tile_starts(max(n, s), s)) for n, s in zip(shape, w))
    candidates = itertools.product(*[range(lo, hi + 1, r.stride) for lo, hi in zip(r.minimum, r.maximum)])
    best = min(count(w) for w in candidates if math.prod(w) <= r.max_voxels)
    assert count(window) == best


def test_one_window_where_the_whole_crop_fits() -> None:
    assert fitted_window((130, 160, 220), PAPER_RANGE) == (144, 160, 224)  # a 512 x 512 x 218 CT's crop
    assert fitted_window((20, 150, 200), PAPER_RANGE) == (32, 160, 208)
    assert fitted_window((300, 160, 220), PAPER_RANGE) == (112, 160, 224)  # three near-equal windows along z


def test_a_voxel_cap_splits_the_crop_into_smaller_windows() -> None:
    crop = (130, 160, 220)  # a 512 x 512 x 218 CT's crop
    for cap in (3_000_000, 1_000_000, 400_000):
        capped = replace(PAPER_RANGE, max_voxels=cap)
        window = fitted_window(crop, capped)
        starts = [tile_starts(max(n, w), w) for n, w in zip(crop, window)]
        assert math.prod(window) <= cap and math.prod(map(len, starts)) > 1
        assert all(s[-1] + w >= n for s, w, n in zip(starts, window, crop))


def test_the_benchmarks_take_a_capped_window() -> None:
    bench = load_tool("benchmark_cascade")
    assert bench.window_choice("fitted:1e6") == "fitted:1000000"
    assert bench.window_settings("fitted:1000000") == {"window": "fitted", "window_voxels": 1_000_000}
    assert bench.window_settings("tiles") == {"window": "tiles", "window_voxels": None}
    for bad in ("tiles:1000", "fitted:1.5", "whole"):
        with pytest.raises(Exception, match="invalid window"):
            bench.window_choice(bad)


# --- the choice follows the checkpoint ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def any_window_cascade(tmp_path_factory) -> tuple[Path, Path]:
    return write_random_cascade(tmp_path_factory.mktemp("results"), "Dataset224_FLARE", tiny=True, **SMALL_CASCADE,
                                organ_window_range=SMALL_RANGE)


def _windows(predictor: FlareCascadePredictor) -> list[dict]:
    image, _ = make_phantom(3, "tiny", fov="abdomen")
    return predictor.run(image).to_report()["organ_windows"]


@pytest.mark.slow
def test_window_choice_follows_the_checkpoint(any_window_cascade, random_cascade) -> None:
    locator, organs = any_window_cascade
    fitted = FlareCascadePredictor.from_folders(locator, organs,
        ModelSettings(backend="torch"), CascadeSettings(progress=False))
    assert fitted.settings()["window"] == "fitted" and fitted.settings()["window_range"]["trained"]
    windows = _windows(fitted)
    assert len(windows) == 1 and windows[0]["shape_xyz"] != list(SMALL_CASCADE["organ_patch_size"])
    tiles = FlareCascadePredictor.from_folders(locator, organs,
        ModelSettings(backend="torch"), CascadeSettings(progress=False, window="tiles"))
    assert _windows(tiles)[0]["shape_xyz"] == list(SMALL_CASCADE["organ_patch_size"])
    fixed_locator, fixed_organs = random_cascade  # no window range in its checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tiles: no warning
        fixed = FlareCascadePredictor.from_folders(fixed_locator, fixed_organs,
            ModelSettings(backend="torch"), CascadeSettings(progress=False))
    assert fixed.settings()["window"] == "tiles"


@pytest.mark.slow
def test_window_voxels_caps_the_fitted_windows(any_window_cascade) -> None:
    locator, organs = any_window_cascade
    def windows(voxels: int | None) -> list[dict]:
        return _windows(FlareCascadePredictor.from_folders(locator, organs, ModelSettings(backend="torch"),
                                                           CascadeSettings(progress=False, window_voxels=voxels)))
    whole = windows(None)
    smallest = math.prod(SMALL_RANGE.minimum)
    capped = windows(smallest)
    assert sum(w["count"] for w in capped) > sum(w["count"] for w in whole)
    assert all(math.prod(w["shape_xyz"]) <= smallest for w in capped)
    with pytest.raises(ValueError, match="below the model's smallest window"):
        windows(smallest - 1)
    with pytest.raises(ValueError, match="whole number of voxels"):
        CascadeSettings(window_voxels=0)


@pytest.mark.slow
def test_forcing_fitted_windows_on_a_fixed_patch_model_warns_once(random_cascade) -> None:
    locator, organs = random_cascade
    with pytest.warns(UserWarning, match="trained on its patch alone") as caught:
        predictor = FlareCascadePredictor.from_folders(locator, organs,
            ModelSettings(backend="torch"), CascadeSettings(progress=False, window="fitted"))
        _windows(predictor)
        _windows(predictor)
    assert len([w for w in caught if "patch alone" in str(w.message)]) == 1
    assert predictor.settings()["window"] == "fitted" and not predictor.settings()["window_range"]["trained"]
    with pytest.raises(ValueError, match="window must be one of"):
        FlareCascadePredictor.from_folders(locator, organs,
            ModelSettings(backend="torch"), CascadeSettings(progress=False, window="whole"))


@pytest.mark.slow
def test_openvino_runs_fitted_windows_like_torch(any_window_cascade, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NNUNETV2_FLARE_CACHE", str(tmp_path / "cache"))
    locator, organs = any_window_cascade
    image, _ = make_phantom(3, "tiny", fov="abdomen")
    runs = {b: FlareCascadePredictor.from_folders(locator, organs,
        ModelSettings(backend=b), CascadeSettings(progress=False)).run(image) for b in ("torch", "openvino")}
    assert runs["torch"].windows == runs["openvino"].windows
    import SimpleITK as sitk

    from nnunetv2_flare.evaluation.metrics import foreground_agreement
    same, total = foreground_agreement(*(sitk.GetArrayFromImage(r.labels) for r in runs.values()))
    assert total > 0 and same / total >= 0.99
    model = FlareCascadePredictor.from_folders(locator, organs,
        ModelSettings(backend="openvino"), CascadeSettings(progress=False)).organs.model
    assert model.trained_window == SMALL_RANGE.to_dict()  # carried through the converted model's cache
    with pytest.raises(ValueError, match="multiples of 16"):
        model(np.zeros((1, 1, 40, 32, 32), np.float32))


# --- any-window training --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ANY_WINDOW_TRAINERS)
def test_nnunet_finds_the_any_window_trainers(name, monkeypatch) -> None:
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunetv2_flare.training.ext_trainer_path import ext_trainer_path
    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_path())
    assert recursive_find_trainer_class_by_name(name).__module__.startswith("nnunetv2_flare.training.")


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([shutil.which(args[0]) or args[0], *args[1:]], env=env, capture_output=True,
                          encoding="utf-8", timeout=900)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def any_window_training(tmp_path_factory) -> dict:
    """A tiny dataset, planned and preprocessed, and one nnUNetv2_train run of the any-window debug trainer."""
    root = tmp_path_factory.mktemp("any_window")
    raw = write_tiny_dataset(root / "raw", DATASET_ID, num_cases=3, num_test_cases=1)
    env = dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="0", nnUNet_compile="false",
               nnUNet_def_n_proc="1")
    env["nnUNet_extTrainer"] = _run(["nnUNetv2_flare_ext_trainer_path"], env).strip()
    _run(["nnUNetv2_flare_plan_and_preprocess", "-d", str(DATASET_ID), "-np", "1", "-c", "flare_locator",
          "flare_organs"], env)
    _run(["nnUNetv2_train", str(DATASET_ID), "flare_organs_narrow", "all", "-tr",
          "nnUNetTrainerFlareOrgansAnyWindow_debug", "-p", "FlarePlans", "-device", "cpu"], env)
    return {"root": root, "raw": raw, "env": env, "preprocessed": root / "preprocessed" / raw.name,
            "model": root / "results" / raw.name /
            "nnUNetTrainerFlareOrgansAnyWindow_debug__FlarePlans__flare_organs_narrow"}


@pytest.mark.slow
def test_the_checkpoint_records_the_window_range(any_window_training) -> None:
    checkpoint = torch.load(any_window_training["model"] / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerFlareOrgansAnyWindow_debug"
    assert WindowRange.from_dict(checkpoint[WINDOW_CHECKPOINT_KEY]) == WindowRange.around((48, 48, 48), 16, 2)
    log = next((any_window_training["model"] / "fold_all").glob("training_log_*.txt")).read_text()
    assert "any-window training: window shapes (32, 32, 32) .. (144, 144, 144)" in log


@pytest.mark.slow
def test_the_loader_varies_the_window_within_its_budget(any_window_training, monkeypatch) -> None:
    from nnunetv2_flare.training.short_run_trainers import nnUNetTrainerFlareOrgansAnyWindow_debug
    monkeypatch.setenv("nnUNet_preprocessed", str(any_window_training["root"] / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(any_window_training["root"] / "results_inprocess"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    pre = any_window_training["preprocessed"]
    plans = json.loads((pre / "FlarePlans.json").read_text())
    plans["continue_training"] = False
    trainer = nnUNetTrainerFlareOrgansAnyWindow_debug(plans, "flare_organs_narrow", "all",
                                                      json.loads((pre / "dataset.json").read_text()),
                                                      torch.device("cpu"))
    trainer.initialize()
    loader = trainer.get_dataloaders()[0].data_loader
    window_range = trainer.window_range()
    np.random.seed(0)
    shapes = set()
    for _ in range(12):
        batch = loader.generate_train_batch()
        data, target = batch["data"], batch["target"]
        n, shape = data.shape[0], tuple(data.shape[2:])
        shapes.add(shape)
        assert 1 <= n <= 2 and n * math.prod(shape) <= window_range.max_voxels
        assert all(s % 16 == 0 and lo <= s for s, lo in zip(shape, window_range.minimum))
        extent = np.max([loader.case_shape(k) for k in batch["keys"]], axis=0)
        assert all(s <= max(lo, math.ceil(e / 16) * 16) for s, e, lo in zip(shape, extent, window_range.minimum))
        assert tuple(target[0].shape[2:]) == shape and tuple(target[1].shape[2:]) == tuple(s // 2 for s in shape)
    assert len(shapes) >= 4
    # a batch of one large window still holds forced foreground at nnU-Net's rate (its last-third rule gives none)
    loader.batch_size = 1
    forced = np.mean([loader.get_do_oversample(0) for _ in range(600)])
    assert abs(forced - trainer.oversample_foreground_percent) < 0.08


@pytest.mark.slow
def test_predict_fits_windows_for_the_trained_model(any_window_training, tmp_path) -> None:
    write = load_tool("random_models").write_random_cascade
    locator, _ = write(tmp_path / "results", "Dataset223_Tiny", tiny=True, **SMALL_CASCADE)
    report = tmp_path / "report.json"
    _run(["nnUNetv2_flare_predict", "-i", str(any_window_training["raw"] / "imagesTs"), "-o", str(tmp_path / "out"),
          "-m1", str(locator), "-m2", str(any_window_training["model"]), "--backend", "torch", "--report",
          str(report), "--disable_progress_bar"], any_window_training["env"])
    data = json.loads(report.read_text())
    assert data["settings"]["window"] == "fitted"
    case = next(iter(data["cases"].values()))
    assert case["organ_windows"] and all(w["count"] >= 1 for w in case["organ_windows"])
