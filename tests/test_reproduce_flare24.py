"""The paper's recipe end to end on a miniature FLARE24 Task 2 release of phantoms (tools/reproduce_flare24.py
--size miniature): every step's command in the log, and what each step hands the next: the converted dataset, the
preprocessed data, both phases' checkpoints, each round's model and label version, the predictions, the metric.
Two label-combining rounds instead of the paper's four keep it within CI's time; the rounds are one loop."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tool_modules import load_tool

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 2
DATASET = "Dataset950_FLARE24"
MODEL = "nnUNetTrainerFlareOrgans_demo__FlarePlans__flare_organs_demo"


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("recipe")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("nnUNet_raw", "nnUNet_preprocessed",
                                                                     "nnUNet_results", "nnUNetFlare_demo"))}
    env["OMP_NUM_THREADS"] = "2"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "reproduce_flare24.py"), "--size", "miniature", "-o",
                           str(out), "--rounds", str(ROUNDS)], env=env, capture_output=True, encoding="utf-8",
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out, done.stdout


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.slow
def test_the_log_shows_every_steps_command(recipe):
    out, stdout = recipe
    summary = json.loads((out / "recipe_summary.json").read_text())
    steps = [s["name"] for s in summary["steps"]]
    assert steps[:7] == ["0_miniature_release", "1_convert", "2a_plan", "2b_miniature_configurations",
                         "2c_preprocess", "3_train_phase1", "4_train_phase2"]
    assert steps[-2:] == ["6_predict_validation", "7_evaluate"]
    assert [s for s in steps if "pseudolabel" in s] == [f"5.{k}c_pseudolabel_round{k}" for k in range(1, ROUNDS + 1)]
    for step in summary["steps"]:
        assert f"== {step['name']}: " in stdout
    for command in ("nnUNetv2_flare_convert -i", "nnUNetv2_flare_plan_and_preprocess -d 950",
                    "nnUNetv2_train 950 flare_locator_demo all", "nnUNetv2_flare_pseudolabel -d 950 -m",
                    "-pretrained_weights", "nnUNetv2_flare_predict -i", "nnUNetv2_flare_evaluate -ref"):
        assert command in stdout and command in (out / "commands.sh").read_text(), command


@pytest.mark.slow
def test_each_step_hands_the_next_what_it_needs(recipe):
    out, _ = recipe
    release = out / "release" / "FLARE-Task2-LaptopSeg"
    raw, pre, results = (out / f"nnUNet_{k}" / DATASET for k in ("raw", "preprocessed", "results"))
    # convert: 3 labelled + 10 pseudo-labelled training cases, 2 validation cases
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == 13
    trusted = (raw / "trusted_cases.txt").read_text().split()
    assert trusted == ["FLARE22_Tr_0001", "FLARE22_Tr_0002", "FLARE22_Tr_0003"]
    assert sorted(p.name for p in (raw / "labelsTs").iterdir()) == ["FLARETs_0001.nii.gz", "FLARETs_0002.nii.gz"]
    # plan and preprocess: both phases' data for every training case
    plans = json.loads((pre / "FlarePlans.json").read_text())
    assert "flare_organs_demo" in plans["configurations"]
    for identifier in ("FlarePlans_flare_locator", "FlarePlans_flare_organs_demo"):
        assert len(list((pre / identifier).glob("*.pkl"))) == 13, identifier
    # train: both phases' checkpoints
    locator = results / "nnUNetTrainerFlareLocator_demo__FlarePlans__flare_locator_demo" / "fold_all"
    assert (locator / "checkpoint_final.pth").is_file()
    # rounds: round k's labels were made by the model kept as round k-1, which the fine-tune started from
    journal = json.loads((raw / "pseudolabel_rounds.json").read_text())
    assert [r["round"] for r in journal["rounds"]] == list(range(ROUNDS + 1))  # round 0: the release's labels
    current = torch.load(results / MODEL / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    for k in range(ROUNDS):
        snapshot = results / "pseudolabel_models" / f"round{k}" / MODEL / "fold_all" / "checkpoint_final.pth"
        assert snapshot.is_file()
        assert journal["rounds"][k + 1]["settings"]["model"] == str(snapshot.parents[1])
        assert journal["rounds"][k + 1]["settings"]["trusted"] == trusted
        finetune_log = (out / "logs" / f"5.{k + 1}d_finetune_round{k + 1}.log").read_text()
        assert f"Loading pretrained weights from file  {snapshot}" in finetune_log  # nnU-Net's own line
    last = torch.load(results / "pseudolabel_models" / f"round{ROUNDS - 1}" / MODEL / "fold_all" /
                      "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert any(not torch.equal(current[name], last[name]) for name in current)  # the last fine-tune trained
    # label versions: round 0 is the release's aladdin5 pseudo-labels, trusted cases never change
    versions = [raw / f"labelsTr_round{k}" for k in range(ROUNDS + 1)] + [raw / "labelsTr"]
    assert all((versions[-2] / f.name).read_bytes() == f.read_bytes() for f in versions[-1].iterdir())
    assert all(len(list(v.glob("*.nii.gz"))) == 13 for v in versions)
    for i in range(1, 11):
        name = f"Case{i}" if i < 10 else f"Case_{i:05d}"
        aladdin5 = read(release / "train_pseudo_label" / "flare22_aladdin5_pseudo" / f"{name}.nii.gz")
        assert np.array_equal(read(versions[0] / f"Case_{i:05d}.nii.gz"), aladdin5)
    changed = [not np.array_equal(read(versions[0] / f"Case_{i:05d}.nii.gz"), read(versions[-1] /
                                                                                    f"Case_{i:05d}.nii.gz"))
               for i in range(1, 11)]
    assert any(changed)
    for case in trusted:
        gt = (release / "train_gt_label" / "labelsTr" / f"{case}.nii.gz").read_bytes()
        assert all((v / f"{case}.nii.gz").read_bytes() == gt for v in versions)
    # predict: one label map per validation CT, on its grid
    for case in ("FLARETs_0001", "FLARETs_0002"):
        prediction = sitk.ReadImage(str(out / "predictions" / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(raw / "imagesTs" / f"{case}_0000.nii.gz"))
        assert prediction.GetSize() == image.GetSize() and np.allclose(prediction.GetOrigin(), image.GetOrigin())
    # evaluate: FLARE's DSC / NSD of both cases
    evaluation = json.loads((out / "evaluation" / "summary_flare.json").read_text())
    assert len(evaluation["per_case"]) == 2 and 0 <= evaluation["mean_DSC"] <= 1


def test_the_full_recipe_is_the_papers(tmp_path, monkeypatch):
    """--size full: the paper's trainers and configurations, 4 rounds, training and relabelling on the GPU, the
    validation predicted on the CPU; nothing of the miniature's."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    recipe = load_tool("reproduce_flare24").build_recipe("full", tmp_path, tmp_path / "FLARE-Task2-LaptopSeg", 220,
                                                         "cuda")
    commands = {step.name: " ".join(step.command) for step in recipe.steps}
    assert [n for n in commands if "finetune" in n] == [f"5.{k}d_finetune_round{k}" for k in range(1, 5)]
    assert "_demo" not in " ".join(commands.values()) and not any(s.action for s in recipe.steps)
    assert commands["3_train_phase1"].endswith("220 flare_locator all -tr nnUNetTrainerFlareLocator -p FlarePlans "
                                               "-device cuda")
    assert "220 flare_organs all -tr nnUNetTrainerFlareOrgans -p FlarePlans -device cuda" in commands["4_train_phase2"]
    assert "-device cuda" in commands["5.1c_pseudolabel_round1"]
    assert "-device" not in commands["6_predict_validation"] and "--backend" not in commands["6_predict_validation"]
    assert recipe.env["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
