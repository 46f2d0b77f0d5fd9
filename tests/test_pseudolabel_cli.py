"""nnUNetv2_flare_pseudolabel end to end with a tiny random organ model run through the cascade's Phase-2 code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunetv2_flare.labels import dataset_json_labels
from nnunetv2_flare.pseudolabel import rounds
from nnunetv2_flare.pseudolabel.cli import main
from nnunetv2_flare.pseudolabel.combine import combine_labels
from nnunetv2_flare.pseudolabel.organ_prediction import label_box, load_organ_predictor, predict_case
from test_pseudolabel_rounds import CASES, TRUSTED, assert_consistent_round, make_dataset, read, snapshot
from tool_modules import load_tool

TINY_ORGAN_KWARGS = load_tool("random_models").TINY_ORGAN_KWARGS
write_random_cascade = load_tool("random_models").write_random_cascade
write_random_model_folder = load_tool("random_models").write_random_model_folder


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
    assert "round 1" in out and "labelsTr_round1" in out
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


def _organ_like_folder(tmp_path: Path, name: str, labels: dict[str, int], **configuration) -> Path:
    folder = write_random_model_folder(tmp_path / "results" / name / "nnUNetTrainerX__FlarePlans__flare_organs",
                                       name, "flare_organs", "nnunetv2_flare.networks.FlareOrganNet",
                                       TINY_ORGAN_KWARGS, labels, (32, 32, 32), (2.0, 1.5, 1.5))
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["flare_organs"].update(configuration)
    (folder / "plans.json").write_text(json.dumps(plans))
    return folder


@pytest.mark.parametrize("kind, message", [
    ("locator", "is a locator (background / abdomen, configuration flare_locator); pseudo-labels come from the "
                "organ model"),
    ("locator_preprocessed", "is a locator (background / abdomen, configuration flare_organs)"),
    ("other_labels", "the model's labels are not the dataset's (4: - (model) vs pancreas (dataset)"),
    ("other_preprocessor", "is prepared by SomePreprocessor, not FlareOrganPreprocessor"),
    ("missing_fold", "fold_0/checkpoint_final.pth is missing"),
])
def test_cli_refuses_a_model_that_cannot_make_the_datasets_organ_labels(setup, tmp_path: Path, capsys, kind: str,
                                                                        message: str):
    """Each refused before anything is read or written, in one line, exit 2 (the locator was taken for an organ
    model before: its abdomen = 1 became liver)."""
    dataset, model, trusted = setup
    fold = "all"
    if kind == "locator":
        model, _ = write_random_cascade(tmp_path / "cascade", "Dataset220_FLARE", tiny=True)
    elif kind == "locator_preprocessed":
        model = _organ_like_folder(tmp_path, "A", dataset_json_labels(),
                                   flare_training_preprocessor="FlareLocatorPreprocessor")
    elif kind == "other_labels":
        model = _organ_like_folder(tmp_path, "B", {"background": 0, "liver": 1, "right_kidney": 2, "spleen": 3})
    elif kind == "other_preprocessor":
        model = _organ_like_folder(tmp_path, "C", dataset_json_labels(),
                                   flare_training_preprocessor="SomePreprocessor")
    else:
        fold = "0"
    before = snapshot(dataset.raw, dataset.preprocessed)
    assert main(["-d", "901", "-m", str(model), "-f", fold, "--trusted", str(trusted), "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert snapshot(dataset.raw, dataset.preprocessed) == before


def test_cli_goes_back_to_a_round_after_the_old_cp_recipe(setup, tmp_path: Path, capsys):
    """The issue's walk: a second round from the same checkpoint (a warning), a third from another model, then round 2
    copied over labelsTr as docs/pseudolabel.md used to say: the next round is refused naming it, --restore_round 2
    puts it back as round 4, --rounds lists it all."""
    dataset, model, trusted = setup
    other = write_random_model_folder(tmp_path / "other" / model.name, dataset.raw.name, "flare_organs",
                                      "nnunetv2_flare.networks.FlareOrganNet", TINY_ORGAN_KWARGS,
                                      dataset_json_labels(), (32, 32, 32), (2.0, 1.5, 1.5), seed=5)
    args = ["-d", "901", "--trusted", str(trusted), "--threads", "1"]
    assert main(args + ["-m", str(model)]) == 0
    assert "warning" not in capsys.readouterr().out
    assert main(args + ["-m", str(model)]) == 0
    assert "warning: round 1 was made with this very model" in capsys.readouterr().out
    assert main(args + ["-m", str(other)]) == 0
    assert "warning" not in capsys.readouterr().out
    round2 = {p.name: p.read_bytes() for p in rounds.history_labels_folder(dataset, 2).iterdir()}
    assert round2 != {p.name: p.read_bytes() for p in dataset.labels_folder.iterdir()}
    for name, content in round2.items():
        (dataset.labels_folder / name).write_bytes(content)
    assert main(args + ["-m", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not round 3 as pseudolabel_rounds.json records it" in err
    assert "it holds exactly the labels of round 2" in err
    assert main(["-d", "901", "--restore_round", "2", "-m", str(model)]) == 2
    assert "--restore_round takes no -m" in capsys.readouterr().err
    assert main(["-d", "901", "--restore_round", "2"]) == 0
    assert "labels of round 4 are now in" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in dataset.labels_folder.iterdir()} == round2
    assert main(["-d", "901", "--rounds"]) == 0
    listing = capsys.readouterr().out
    assert "current round 4;" in listing and "holds round 4 as recorded" in listing
    assert "round 0: the original labels" in listing and "round 4: round 2's labels restored" in listing
    assert main(["-d", "901", "--restore_round", "7"]) == 2
    assert "there is no round 7 to go back to" in capsys.readouterr().err


def test_cli_refuses_a_priority_with_a_label_the_dataset_lacks(setup, capsys):
    dataset, model, trusted = setup
    assert main(["-d", "901", "-m", str(model), "--priority", *map(str, range(1, 15))]) == 2
    assert "names [14], which the dataset does not have" in capsys.readouterr().err
