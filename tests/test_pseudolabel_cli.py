"""nnUNetv2_flare_pseudolabel end to end with a tiny random organ model run through the cascade's Phase-2 code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2_flare.inference.random_models import TINY_ORGAN_KWARGS, write_random_model_folder
from nnunetv2_flare.labels import dataset_json_labels
from nnunetv2_flare.pseudolabel import rounds
from nnunetv2_flare.pseudolabel.cli import main
from nnunetv2_flare.pseudolabel.combine import combine_labels
from nnunetv2_flare.pseudolabel.organ_prediction import label_box, load_organ_predictor, predict_case
from test_pseudolabel_rounds import CASES, TRUSTED, assert_consistent_round, make_dataset, read, snapshot


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch):
    torch.set_num_threads(2)
    dataset = make_dataset(tmp_path)
    model = write_random_model_folder(
        tmp_path / "results" / dataset.raw.name / "nnUNetTrainerFlareOrgans__FlarePlans__flare_organs",
        dataset.raw.name, "flare_organs", "nnunetv2_flare.networks.FlareOrganNet", TINY_ORGAN_KWARGS,
        dataset_json_labels(), (32, 32, 32), (2.0, 1.5, 1.5))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    trusted = tmp_path / "trusted.txt"
    trusted.write_text("# expert labels\n" + "\n".join(f"{c}.nii.gz" for c in TRUSTED) + "\n\n")
    return dataset, model, trusted


def test_cli_dry_run_then_round_then_history(setup, tmp_path: Path, capsys):
    dataset, model, trusted = setup
    args = ["-d", "901", "-m", str(model), "--trusted", str(trusted), "--threads", "1"]
    before = snapshot(dataset.raw, dataset.preprocessed)
    assert main(args + ["--dry_run", "--report", str(tmp_path / "dry.json")]) == 0
    assert snapshot(dataset.raw, dataset.preprocessed) == before
    dry = json.loads((tmp_path / "dry.json").read_text())
    assert dry["dry_run"] and "DRY RUN" in capsys.readouterr().out

    assert main(args) == 0
    out = capsys.readouterr().out
    assert "round 1" in out and "labelsTr_round<k>" in out
    assert (f"nnUNetv2_train {dataset.raw.name} flare_organs all -tr nnUNetTrainerFlareOrgans -p FlarePlans "
            f"-pretrained_weights $nnUNet_results/{dataset.raw.name}/pseudolabel_models/round0/{model.name}/fold_all/"
            f"checkpoint_final.pth") in out
    report = json.loads(rounds.report_path(dataset, 1).read_text())
    assert report["cases"] == dry["cases"], "the dry run must report exactly what the round then does"
    # the labels are the combination of the old labels with the cascade's Phase-2 prediction on the label's box
    predictor = load_organ_predictor(model, "all", threads=1)
    expected = {}
    for case in CASES:
        old = read(rounds.history_labels_folder(dataset, 0) / f"{case}.nii.gz")
        if case in TRUSTED:
            expected[case] = old
            continue
        image = sitk.ReadImage(str(dataset.images[case][0]))
        predicted = predict_case(predictor, image, old)
        box = label_box(old, image.GetSpacing()[::-1])
        outside = np.ones(old.shape, bool)
        outside[box.slices] = False
        assert not predicted[outside].any(), "the organ model only labels the crop of the label's box"
        expected[case] = combine_labels(old, predicted)
        assert report["cases"][case]["changed"] == (not np.array_equal(old, expected[case]))
    assert_consistent_round(dataset, expected)

    assert main(["-d", "901", "--rounds"]) == 0
    listing = capsys.readouterr().out
    assert "current round 1" in listing and str(model) in listing


def test_cli_refuses_with_a_message_and_exit_code(setup, capsys):
    dataset, model, trusted = setup
    (dataset.preprocessed / "gt_segmentations" / f"{CASES[1]}.nii.gz").unlink()
    assert main(["-d", "901", "-m", str(model), "--trusted", str(trusted)]) == 2
    err = capsys.readouterr().err
    assert "disagree" in err and "gt_segmentations" in err and "re-run the preprocessing" in err
    assert main(["-d", "901"]) == 2
    assert "-m ORGAN_MODEL_FOLDER is required" in capsys.readouterr().err
