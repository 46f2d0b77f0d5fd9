"""Pseudo-label rounds on a tiny nnU-Net dataset: layout, trusted cases, preprocessed data, interruptions, dry run."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunetv2_flare.labels import dataset_json_labels
from nnunetv2_flare.planning.abdomen_labels import ABDOMEN_REFERENCE_FOLDER, binarize, write_abdomen_references
from nnunetv2_flare.planning.preprocessors import training_preprocessor_class
from nnunetv2_flare.pseudolabel import rounds
from nnunetv2_flare.pseudolabel.combine import combine_labels
from nnunetv2_flare.pseudolabel.dataset_state import DatasetStateError, FlareDataset, check_dataset_consistency
from nnunetv2_flare.pseudolabel.organ_prediction import label_box
from nnunetv2_flare.pseudolabel.run_round import run_pseudolabel_round
from tool_modules import load_tool

plans_configuration = load_tool("random_models").plans_configuration

SHAPE = (20, 24, 28)            # z, y, x
SPACING_XYZ = (1.5, 1.5, 2.0)   # the organ configuration's spacing: preprocessed seg == raw label, voxel for voxel
CASES = [f"tiny_{i:03d}" for i in range(4)]
TRUSTED = [CASES[0]]
SETTINGS = {"model": "fake-organ-model", "fold": "all", "checkpoint": "checkpoint_final.pth"}
LIVER, SPLEEN, GALLBLADDER, STOMACH = 1, 3, 9, 11


def _configuration(data_identifier: str, spacing: list[float], patch: list[int], training_preprocessor: str) -> dict:
    configuration = plans_configuration("nnunetv2_flare.networks.FlareOrganNet", {}, patch, spacing)
    configuration.update(data_identifier=data_identifier, flare_training_preprocessor=training_preprocessor,
                         flare_foreground_margin_mm=3.0, median_image_size_in_voxels=list(SHAPE))
    return configuration


def _plans() -> dict:
    return {
        "dataset_name": "Dataset901_PseudoTiny", "plans_name": "FlarePlans",
        "original_median_spacing_after_transp": [2.0, 1.5, 1.5], "original_median_shape_after_transp": list(SHAPE),
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "handmade for tests", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {
            "max": 400.0, "mean": 60.0, "median": 60.0, "min": -200.0, "percentile_00_5": -150.0,
            "percentile_99_5": 300.0, "std": 50.0}},
        "configurations": {
            "flare_organs": _configuration("FlarePlans_flare_organs", [2.0, 1.5, 1.5], [16, 16, 16],
                                           "FlareOrganPreprocessor"),
            "flare_organs_narrow": {"inherits_from": "flare_organs", "batch_size": 1},
            "flare_locator": _configuration("FlarePlans_flare_locator", [4.0, 3.0, 3.0], [16, 16, 16],
                                            "FlareLocatorPreprocessor"),
        },
    }


def _label(i: int) -> np.ndarray:
    """Liver and stomach blocks with a one-slice gap in the liver (the kind of break rounds are meant to fill)."""
    lab = np.zeros(SHAPE, np.uint8)
    lab[4:14, 4:12, 4:12] = LIVER
    lab[8, 4:12, 4:12] = 0
    lab[5:12, 14:20, 14 + i % 3:22] = STOMACH
    if i % 2:
        lab[14:17, 4:8, 16:20] = SPLEEN
    return lab


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((-20.0, 10.0, 5.0))
    sitk.WriteImage(image, str(path), useCompression=True)


def make_dataset(root: Path) -> FlareDataset:
    raw = root / "raw" / "Dataset901_PseudoTiny"
    pre = root / "preprocessed" / "Dataset901_PseudoTiny"
    for d in (raw / "imagesTr", raw / "labelsTr", pre / "gt_segmentations"):
        d.mkdir(parents=True)
    dataset_json = {"channel_names": {"0": "CT"}, "labels": dataset_json_labels(), "numTraining": len(CASES),
                    "file_ending": ".nii.gz"}
    for folder in (raw, pre):
        (folder / "dataset.json").write_text(json.dumps(dataset_json))
    (pre / "FlarePlans.json").write_text(json.dumps(_plans(), indent=2))
    (pre / "dataset_fingerprint.json").write_text(json.dumps({"note": "must stay untouched"}))
    rng = np.random.default_rng(0)
    for i, case in enumerate(CASES):
        label = _label(i)
        image = (rng.normal(-100, 20, SHAPE) + 150 * (label > 0)).astype(np.int16)
        _write(image, raw / "imagesTr" / f"{case}_0000.nii.gz")
        _write(label, raw / "labelsTr" / f"{case}.nii.gz")
        (pre / "gt_segmentations" / f"{case}.nii.gz").write_bytes((raw / "labelsTr" / f"{case}.nii.gz").read_bytes())
    plans_manager = PlansManager(str(pre / "FlarePlans.json"))
    for cfg in ("flare_organs", "flare_locator"):  # what nnUNetv2_flare_plan_and_preprocess runs, minus the pool
        cm = plans_manager.get_configuration(cfg)
        (pre / cm.data_identifier).mkdir()
        for case in CASES:
            training_preprocessor_class(cm.configuration)(verbose=False).run_case_save(
                str(pre / cm.data_identifier / case), [str(raw / "imagesTr" / f"{case}_0000.nii.gz")],
                str(raw / "labelsTr" / f"{case}.nii.gz"), plans_manager, cm, dataset_json)
    write_abdomen_references(pre / "gt_segmentations", pre / ABDOMEN_REFERENCE_FOLDER,
                             plans_manager.image_reader_writer_class, ".nii.gz", show_progress=False)
    return FlareDataset.open(raw, pre, "FlarePlans")


class FakeOrganModel:
    """Deterministic 'model': fills the liver gap, paints a gallbladder that overlaps the stomach, misses the spleen.
    Counts its calls (a resumed round must not predict finished cases again)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def full_prediction(self) -> np.ndarray:
        pred = np.zeros(SHAPE, np.uint8)
        pred[4:14, 4:12, 4:12] = LIVER
        pred[6:10, 14:18, 14:18] = GALLBLADDER
        return pred

    def __call__(self, image: sitk.Image, box) -> np.ndarray:
        self.calls.append(box)
        return self.full_prediction()[box.slices]


def expected_label(i: int, model: FakeOrganModel) -> np.ndarray:
    old = _label(i)
    pred = np.zeros_like(old)
    box = label_box(old, SPACING_XYZ[::-1])
    pred[box.slices] = model.full_prediction()[box.slices]
    return combine_labels(old, pred)


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file (relative path -> content hash) and folder (-> 'dir'); symlinks marked."""
    out = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            key = str(p.relative_to(folder.parent))
            out[key] = "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture()
def dataset(tmp_path: Path) -> FlareDataset:
    return make_dataset(tmp_path)


def run(dataset: FlareDataset, model: FakeOrganModel, **kwargs):
    return run_pseudolabel_round(dataset, lambda: model, SETTINGS, trusted=TRUSTED, progress=False, **kwargs)


def assert_consistent_round(dataset: FlareDataset, expected: dict[str, np.ndarray]) -> None:
    """Raw labels == expected; gt_segmentations and every preprocessed folder agree with them, as a fresh
    preprocessing of the new labels would write them; nnU-Net's data loader reads the data."""
    check_dataset_consistency(dataset)
    pre = dataset.preprocessed
    plans_manager = PlansManager(str(dataset.plans_file))
    dataset_json = json.loads((pre / "dataset.json").read_text())
    for case, label in expected.items():
        np.testing.assert_array_equal(read(dataset.label_file(case)), label)
        assert dataset.label_file(case, pre / "gt_segmentations").read_bytes() == \
            dataset.label_file(case).read_bytes()
        for cfg in ("flare_organs", "flare_locator"):
            cm = plans_manager.get_configuration(cfg)
            data, seg, props = training_preprocessor_class(cm.configuration)(verbose=False).run_case(
                [str(f) for f in dataset.images[case]], str(dataset.label_file(case)), plans_manager, cm,
                dataset_json)
            stored = nnUNetDatasetBlosc2(str(pre / cm.data_identifier), [case])
            s_data, s_seg, _, s_props = stored.load_case(case)
            np.testing.assert_array_equal(np.asarray(s_seg[:]), seg)
            np.testing.assert_allclose(np.asarray(s_data[:]), data, atol=1e-5)
            assert s_props["class_locations"].keys() == props["class_locations"].keys()
            for k, locs in props["class_locations"].items():
                np.testing.assert_array_equal(s_props["class_locations"][k], locs)
        _, organ_seg, _, organ_props = nnUNetDatasetBlosc2(str(pre / "FlarePlans_flare_organs"), [case]).load_case(case)
        crop = tuple(slice(lo, hi) for lo, hi in organ_props["bbox_used_for_cropping"])
        np.testing.assert_array_equal(np.asarray(organ_seg[0]), label[crop])  # same spacing: no resampling
        np.testing.assert_array_equal(read(dataset.label_file(case, pre / ABDOMEN_REFERENCE_FOLDER)), binarize(label))
    cm = plans_manager.get_configuration("flare_organs")
    loader = nnUNetDataLoader(nnUNetDatasetBlosc2(str(pre / cm.data_identifier)), 2, cm.patch_size, cm.patch_size,
                              plans_manager.get_label_manager(dataset_json), oversample_foreground_percent=1.0)
    batch = next(loader)
    assert batch["data"].shape == (2, 1, *cm.patch_size) and batch["target"].max() > 0


def test_round_writes_next_round_keeps_old_and_trusted_and_refreshes_preprocessed(dataset: FlareDataset):
    originals = {c: dataset.label_file(c).read_bytes() for c in CASES}
    plans_before = dataset.plans_file.read_bytes()
    fingerprint_before = (dataset.preprocessed / "dataset_fingerprint.json").read_bytes()
    trusted_data_before = (dataset.preprocessed / "FlarePlans_flare_organs" / f"{TRUSTED[0]}.b2nd").read_bytes()
    model = FakeOrganModel()

    result = run(dataset, model)

    assert result.round == 1 and not result.dry_run
    assert len(model.calls) == len(CASES) - 1, "trusted cases must not be predicted"
    expected = {c: expected_label(i, model) for i, c in enumerate(CASES)}
    expected[TRUSTED[0]] = _label(0)
    assert_consistent_round(dataset, expected)
    # round 0 recoverable byte for byte; trusted case byte-identical; plans and fingerprint untouched
    for c in CASES:
        assert rounds.history_labels_folder(dataset, 0).joinpath(f"{c}.nii.gz").read_bytes() == originals[c]
    assert dataset.label_file(TRUSTED[0]).read_bytes() == originals[TRUSTED[0]]
    assert (dataset.preprocessed / "FlarePlans_flare_organs" / f"{TRUSTED[0]}.b2nd").read_bytes() == \
        trusted_data_before
    assert dataset.plans_file.read_bytes() == plans_before
    assert (dataset.preprocessed / "dataset_fingerprint.json").read_bytes() == fingerprint_before
    # the label gained the gallbladder over the stomach and the liver gap; geometry kept
    new1 = read(dataset.label_file(CASES[1]))
    assert (new1 == GALLBLADDER).sum() > 0 and (new1[8, 4:12, 4:12] == LIVER).all()
    assert sitk.ReadImage(str(dataset.label_file(CASES[1]))).GetSpacing() == SPACING_XYZ
    # report: saved, per-organ totals are the sums of the per-case numbers, and match the arrays
    report = json.loads(rounds.report_path(dataset, 1).read_text())
    assert report == json.loads(json.dumps(result.report))
    assert sorted(result.changed_cases) == CASES[1:]
    gallbladder_gained = sum(int(((expected[c] == GALLBLADDER) & (_label(i) != GALLBLADDER)).sum())
                             for i, c in enumerate(CASES))
    assert report["totals"]["per_organ"]["gallbladder"]["gained"] == gallbladder_gained > 0
    assert report["totals"]["per_organ"]["stomach"]["lost"] == sum(
        e["per_organ"]["stomach"]["lost"] for e in report["cases"].values()) > 0
    assert report["cases"][TRUSTED[0]]["trusted"] and not report["cases"][TRUSTED[0]]["changed"]
    # journal and nothing hidden left over
    journal = rounds.load_journal(dataset)
    assert journal["current_round"] == 1 and journal["rounds"][-1]["state"] == "done"
    leftovers = [p.name for f in (dataset.raw, dataset.preprocessed) for p in f.iterdir() if p.name.startswith(".")]
    assert leftovers == []

    # a second round with the same model has nothing left to add: it is recorded and changes nothing
    result2 = run(dataset, FakeOrganModel())
    assert result2.round == 2 and result2.changed_cases == []
    for c in CASES:
        assert rounds.history_labels_folder(dataset, 1).joinpath(f"{c}.nii.gz").read_bytes() == \
            dataset.label_file(c).read_bytes()
    assert_consistent_round(dataset, expected)
    listing = rounds.describe_rounds(dataset)
    assert "current round 2" in listing and "holds round 2 as recorded" in listing and "labelsTr_round0" in listing
    assert "round 1: pseudo-labels of model fake-organ-model fold all; done" in listing


def test_dry_run_computes_everything_and_writes_nothing(dataset: FlareDataset, tmp_path: Path):
    before = snapshot(dataset.raw, dataset.preprocessed)
    model = FakeOrganModel()
    result = run(dataset, model, dry_run=True)
    assert snapshot(dataset.raw, dataset.preprocessed) == before
    assert result.dry_run and sorted(result.changed_cases) == CASES[1:]
    assert len(model.calls) == len(CASES) - 1
    assert result.report["totals"]["per_organ"]["gallbladder"]["gained"] > 0


@pytest.mark.parametrize("stage, fail_at", [("labels", 2), ("preprocessing", 5)])
def test_interrupted_round_leaves_old_round_and_rerun_completes(dataset: FlareDataset, stage: str, fail_at: int):
    before = snapshot(dataset.raw / "labelsTr", dataset.preprocessed)
    seen = []

    def fail(s: str, case: str) -> None:
        if s == stage:
            seen.append(case)
            if len(seen) == fail_at:
                raise KeyboardInterrupt("simulated Ctrl-C")

    first = FakeOrganModel()
    with pytest.raises(KeyboardInterrupt):
        run(dataset, first, after_case=fail)
    # what nnU-Net reads is still exactly the old round, and consistent
    assert {k: v for k, v in snapshot(dataset.raw / "labelsTr", dataset.preprocessed).items()
            if not any(part.startswith(".") for part in Path(k).parts)} == before
    check_dataset_consistency(dataset)
    journal = rounds.load_journal(dataset)
    assert journal["current_round"] == 0 and journal["rounds"][-1]["state"] != "done"
    assert "unfinished" in rounds.describe_rounds(dataset)

    second = FakeOrganModel()
    result = run(dataset, second)
    assert result.round == 1
    # cases finished before the interruption are not predicted again
    assert len(first.calls) + len(second.calls) == len(CASES) - 1
    expected = {c: expected_label(i, second) for i, c in enumerate(CASES)}
    expected[TRUSTED[0]] = _label(0)
    assert_consistent_round(dataset, expected)


RENAMES_IN_A_FIRST_ROUND = 12  # round 0's folder; 4 preprocessed folders x 2; the round's folder; labelsTr x 2


def test_a_first_round_renames_what_the_interruption_test_covers(dataset: FlareDataset, monkeypatch):
    real_rename, calls = os.rename, []
    monkeypatch.setattr(rounds.os, "rename", lambda a, b: (calls.append((a, b)), real_rename(a, b)))
    run(dataset, FakeOrganModel())
    assert len(calls) == RENAMES_IN_A_FIRST_ROUND


@pytest.mark.parametrize("die_at", range(1, RENAMES_IN_A_FIRST_ROUND + 1))
def test_interruption_at_any_rename_is_finished_by_the_rerun(dataset: FlareDataset, monkeypatch, die_at: int):
    originals = {c: dataset.label_file(c).read_bytes() for c in CASES}
    real_rename = os.rename
    calls = []

    def rename_then_die(a, b):
        calls.append((a, b))
        if len(calls) == die_at:
            raise KeyboardInterrupt("simulated Ctrl-C during the switch")
        real_rename(a, b)

    monkeypatch.setattr(rounds.os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(dataset, FakeOrganModel())
    monkeypatch.setattr(rounds.os, "rename", real_rename)
    journal = rounds.load_journal(dataset)
    if journal["rounds"] and journal["rounds"][-1]["state"] == "switching":
        with pytest.raises(DatasetStateError, match="interrupted while its folders were being switched"):
            check_dataset_consistency(dataset)
    model = FakeOrganModel()
    result = run(dataset, model)
    assert result.round == 1
    if journal["rounds"] and journal["rounds"][-1]["state"] == "switching":
        assert result.finished_interrupted_switch and model.calls == []
    expected = {c: expected_label(i, model) for i, c in enumerate(CASES)}
    expected[TRUSTED[0]] = _label(0)
    assert_consistent_round(dataset, expected)
    for c in CASES:
        assert rounds.history_labels_folder(dataset, 0).joinpath(f"{c}.nii.gz").read_bytes() == originals[c]
        assert rounds.history_labels_folder(dataset, 1).joinpath(f"{c}.nii.gz").read_bytes() == \
            dataset.label_file(c).read_bytes()
    assert not [p.name for f in (dataset.raw, dataset.preprocessed) for p in f.iterdir() if p.name.startswith(".")]


def test_unfinished_round_with_other_settings_is_refused_until_restart(dataset: FlareDataset):
    with pytest.raises(KeyboardInterrupt):
        run(dataset, FakeOrganModel(), after_case=lambda s, c: (_ for _ in ()).throw(KeyboardInterrupt()))
    other = dict(SETTINGS, model="another-model")
    with pytest.raises(DatasetStateError, match="other settings .*model.*--restart"):
        run_pseudolabel_round(dataset, FakeOrganModel, other, trusted=TRUSTED, progress=False)
    result = run_pseudolabel_round(dataset, FakeOrganModel, other, trusted=TRUSTED, progress=False, restart=True)
    assert result.round == 1 and rounds.load_journal(dataset)["rounds"][-1]["settings"]["model"] == "another-model"


def test_refuses_when_labels_and_preprocessed_data_disagree(dataset: FlareDataset):
    edited = _label(2)
    edited[0, 0, 0] = SPLEEN
    _write(edited, dataset.label_file(CASES[2]))
    with pytest.raises(DatasetStateError, match=f"{CASES[2]}: labelsTr and gt_segmentations differ"):
        run(dataset, FakeOrganModel())
    assert not dataset.journal_path.exists()


def test_refuses_a_label_off_its_image_grid(dataset: FlareDataset):
    path = dataset.label_file(CASES[1])
    image = sitk.ReadImage(str(path))
    image.SetSpacing((1.5, 1.5, 2.5))
    sitk.WriteImage(image, str(path), useCompression=True)
    (dataset.preprocessed / "gt_segmentations" / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DatasetStateError, match="geometry differs from its image: spacing"):
        run(dataset, FakeOrganModel())


def test_unknown_trusted_case_or_incomplete_priority_is_refused_before_anything_is_written(dataset: FlareDataset):
    with pytest.raises(DatasetStateError, match="trusted case ids not in"):
        run_pseudolabel_round(dataset, FakeOrganModel, SETTINGS, trusted=["nope"], progress=False)
    with pytest.raises(DatasetStateError, match=r"misses the dataset's labels \[12, 13\]"):
        run_pseudolabel_round(dataset, FakeOrganModel, SETTINGS, priority=range(1, 12), progress=False)
    assert not dataset.journal_path.exists()


class RelabelInsideStomach(FakeOrganModel):
    """Turns part of the stomach into gallbladder: organ labels change, the abdomen (label > 0) does not."""

    def full_prediction(self) -> np.ndarray:
        pred = np.zeros(SHAPE, np.uint8)
        pred[6:10, 14:18, 16:18] = GALLBLADDER
        return pred


def test_locator_data_are_kept_when_only_organ_identities_change(dataset: FlareDataset):
    locator = dataset.preprocessed / "FlarePlans_flare_locator"
    organs = dataset.preprocessed / "FlarePlans_flare_organs"
    inodes = {p.name: p.stat().st_ino for p in locator.iterdir()}
    organ_seg_before = (organs / f"{CASES[1]}_seg.b2nd").read_bytes()
    model = RelabelInsideStomach()
    result = run(dataset, model)
    assert sorted(result.changed_cases) == CASES[1:]
    assert result.report["totals"]["foreground_changed"] == 0
    # the locator's files are the very same files (hard-linked into the new round), the organ data are new
    assert {p.name: p.stat().st_ino for p in locator.iterdir()} == inodes
    assert (organs / f"{CASES[1]}_seg.b2nd").read_bytes() != organ_seg_before
    expected = {c: expected_label(i, model) for i, c in enumerate(CASES)}
    expected[TRUSTED[0]] = _label(0)
    assert_consistent_round(dataset, expected)
