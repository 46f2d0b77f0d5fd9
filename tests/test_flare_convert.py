"""nnUNetv2_flare_convert: FLARE's release layouts recognised, cases matched by name or number, the source never
changed, interrupted conversions resumed, and each kind of bad input refused in one line."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_flare.cli_errors import EXIT_FAILED_CASES, EXIT_OK, EXIT_USAGE
from nnunetv2_flare.conversion import convert as convert_module
from nnunetv2_flare.conversion.case_matching import (
    CHANNEL,
    NUMBER,
    SAME_NAME,
    CaseMatchError,
    case_file,
    case_key,
    match_cases,
)
from nnunetv2_flare.conversion.cli import main
from nnunetv2_flare.conversion.convert import REPORT, TRUSTED_CASES, convert_flare_release
from nnunetv2_flare.conversion.layouts import LABELLED, PSEUDO, VALIDATION, LayoutError, recognise_layout
from nnunetv2_flare.labels import dataset_json_labels
from tool_modules import load_tool


def write(path: Path, value: int = 1, shape: tuple[int, int, int] = (3, 4, 5), spacing=(1.0, 1.0, 2.0)) -> Path:
    """A tiny image (array order z, y, x) whose voxels hold `value`; labels and images alike."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.full(shape, value, np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def flare24_tree(root: Path, pseudo: int = 3) -> Path:
    """A skeleton of FLARE24 Task 2: 2 labelled, `pseudo` pseudo-labelled (aladdin5 named Case1..., blackbean
    Case_0000k), 1 public validation case with its label, 1 hidden."""
    r = root / "FLARE-Task2-LaptopSeg"
    for i in (1, 2):
        write(r / "train_gt_label" / "imagesTr" / f"FLARE22_Tr_{i:04d}_0000.nii.gz", 100 + i)
        write(r / "train_gt_label" / "labelsTr" / f"FLARE22_Tr_{i:04d}.nii.gz", i)
    for i in range(1, pseudo + 1):
        write(r / "train_pseudo_label" / "imagesTr" / f"Case_{i:05d}_0000.nii.gz", 50 + i)
        write(r / "train_pseudo_label" / "flare22_aladdin5_pseudo" / f"Case{i}.nii.gz", i)
        write(r / "train_pseudo_label" / "pseudo_label_blackbean_flare22" / f"Case_{i:05d}.nii.gz", 13 - i)
    write(r / "validation" / "Validation-Public-Images" / "FLARETs_0001_0000.nii.gz", 7)
    write(r / "validation" / "Validation-Public-Labels" / "FLARETs_0001.nii.gz", 5)
    write(r / "validation" / "Validation-Hidden-Images" / "FLARETs_0002_0000.nii.gz", 9)
    return r


def snapshot(folder: Path) -> dict[str, tuple[str, float]]:
    return {str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--disable_progress_bar"])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- matching --------------------------------------------------------------------------------------------------------

def test_case_names_match_by_name_channel_suffix_or_number(tmp_path):
    assert case_key("Case1") == case_key("Case_00001") == case_key("case-01") == ("case", 1)
    assert case_key("Case_00001") != case_key("FLARETs_0001") and case_key("Case_00001") != case_key("Case_00010")
    images = [case_file(tmp_path / f"{n}_0000.nii.gz") for n in ("Case_00001", "Case_00002", "Case_00003", "A")]
    labels = [case_file(tmp_path / n) for n in ("Case_00001.nii.gz", "Case_00002_0000.nii.gz", "Case3.nii.gz",
                                                 "Case_00099.nii.gz")]
    matches, unused = match_cases(images, labels)
    assert [(m.case, m.rule) for m in matches] == [("Case_00001", SAME_NAME), ("Case_00002", CHANNEL),
                                                   ("Case_00003", NUMBER), ("A", None)]
    assert [u.case for u in unused] == ["Case_00099"]
    with pytest.raises(CaseMatchError, match="both labels of case Case_00003"):
        match_cases(images[2:3], [case_file(tmp_path / "Case3.nii.gz"), case_file(tmp_path / "case_03.nii.gz")])
    with pytest.raises(CaseMatchError, match="same case"):
        match_cases([case_file(tmp_path / "Case1_0000.nii.gz"), case_file(tmp_path / "Case_01_0000.nii.gz")], [])


# --- layouts ---------------------------------------------------------------------------------------------------------

def test_each_release_layout_is_recognised(tmp_path):
    layout = recognise_layout(flare24_tree(tmp_path / "24"))
    assert (layout.name, layout.dataset_name, layout.pseudo_labels) == ("FLARE24 Task 2", "FLARE24", "aladdin5")
    assert [(s.name, s.split, s.labels_required) for s in layout.sets] == [
        (LABELLED, "Tr", True), (PSEUDO, "Tr", True), (VALIDATION, "Ts", True)]
    assert layout.sets[1].label_folders[0].name == "flare22_aladdin5_pseudo"
    assert "Validation-Hidden-Images: 1 images" in layout.not_converted[0]
    assert recognise_layout(tmp_path / "24" / "FLARE-Task2-LaptopSeg",
                            ["blackbean"]).sets[1].label_folders[0].name == "pseudo_label_blackbean_flare22"
    assert [s.name for s in recognise_layout(tmp_path / "24" / "FLARE-Task2-LaptopSeg", ["none"]).sets] == [
        LABELLED, VALIDATION]

    r22 = tmp_path / "22"
    write(r22 / "Training" / "FLARE22_LabeledCase50" / "images" / "FLARE22_Tr_0001_0000.nii.gz")
    write(r22 / "Training" / "FLARE22_LabeledCase50" / "labels" / "FLARE22_Tr_0001.nii.gz")
    write(r22 / "Training" / "FLARE22_UnlabeledCase1-1000" / "Case_00001_0000.nii.gz")
    write(r22 / "Validation" / "FLARETs_0001_0000.nii.gz")
    layout = recognise_layout(r22)
    assert layout.name == "FLARE22" and [s.name for s in layout.sets] == [LABELLED, VALIDATION]
    assert "1 unlabelled images left out" in layout.not_converted[0]
    assert not layout.sets[1].label_folders  # FLARE22's validation images alone: imagesTs only
    pseudo = tmp_path / "22pseudo"
    write(pseudo / "Case1.nii.gz")
    assert [s.name for s in recognise_layout(r22, [str(pseudo)]).sets] == [LABELLED, PSEUDO, VALIDATION]

    r23 = tmp_path / "23"
    write(r23 / "imagesTr2200" / "FLARE23_0001_0000.nii.gz")
    write(r23 / "labelsTr2200" / "FLARE23_0001.nii.gz")
    write(r23 / "unlabeledTr1800" / "FLARE23_2201.nii.gz")
    with pytest.raises(LayoutError, match="lesion class"):
        recognise_layout(r23)
    layout = recognise_layout(r23, [str(pseudo)])
    assert layout.name == "FLARE23" and [s.labels_required for s in layout.sets] == [True, False]


def test_a_folder_that_is_no_release_is_refused_with_the_folder_to_give(tmp_path):
    flare24_tree(tmp_path)
    with pytest.raises(LayoutError, match="give -i .*FLARE-Task2-LaptopSeg"):
        recognise_layout(tmp_path)
    with pytest.raises(LayoutError, match="matches none of FLARE's release layouts"):
        recognise_layout(tmp_path / "FLARE-Task2-LaptopSeg" / "validation")


# --- conversion ------------------------------------------------------------------------------------------------------

def test_convert_copies_every_case_and_leaves_the_source_untouched(tmp_path, capsys):
    release = flare24_tree(tmp_path / "release", pseudo=11)
    before = snapshot(release)
    code, out, err = run_cli(capsys, "-i", str(release), "-d", "220", "-o", str(tmp_path / "raw"))
    assert code == EXIT_OK, err
    assert snapshot(release) == before
    ds = tmp_path / "raw" / "Dataset220_FLARE24"
    report = json.loads((ds / REPORT).read_text())
    assert report["state"] == "complete"
    counts = report["counts"]
    assert counts[LABELLED]["converted"] == 2 and counts[VALIDATION]["converted"] == 1
    assert counts[PSEUDO]["matched_by"] == {SAME_NAME: 0, CHANNEL: 0, NUMBER: 11}  # Case1 ... Case11
    assert "pseudo-labelled       11         11        11   0 / 0 / 11" in out
    cases = {c["case"]: c for c in report["cases"]}
    assert cases["Case_00010"]["label"] == "train_pseudo_label/flare22_aladdin5_pseudo/Case10.nii.gz"
    for i in range(1, 12):
        assert array(ds / "labelsTr" / f"Case_{i:05d}.nii.gz").max() == i  # aladdin5's label of that case
        assert array(ds / "imagesTr" / f"Case_{i:05d}_0000.nii.gz").max() == 50 + i
    assert array(ds / "labelsTs" / "FLARETs_0001.nii.gz").max() == 5
    assert not list(ds.glob("*/FLARETs_0002*"))  # hidden validation: no labels, not converted
    assert (ds / TRUSTED_CASES).read_text().split() == ["FLARE22_Tr_0001", "FLARE22_Tr_0002"]
    dataset_json = json.loads((ds / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 13 and dataset_json["labels"] == dataset_json_labels()
    assert dataset_json["channel_names"] == {"0": "CT"} and dataset_json["file_ending"] == ".nii.gz"
    assert len(list((ds / "imagesTr").iterdir())) == len(list((ds / "labelsTr").iterdir())) == 13
    # a finished dataset is never written again: later rounds' labels stay
    write(ds / "labelsTr" / "Case_00001.nii.gz", 12)
    code, out, _ = run_cli(capsys, "-i", str(release), "-d", "220", "-o", str(tmp_path / "raw"))
    assert code == EXIT_OK and "0 files written" in out
    assert array(ds / "labelsTr" / "Case_00001.nii.gz").max() == 12


def test_link_mode_writes_links_into_the_release(tmp_path, capsys):
    release = flare24_tree(tmp_path / "release")
    code, _, err = run_cli(capsys, "-i", str(release), "-d", "221", "-o", str(tmp_path / "raw"), "--link",
                           "--pseudo_labels", "blackbean")
    assert code == EXIT_OK, err
    label = tmp_path / "raw" / "Dataset221_FLARE24" / "labelsTr" / "Case_00002.nii.gz"
    assert label.is_symlink()
    assert Path(os.readlink(label)) == release / "train_pseudo_label" / "pseudo_label_blackbean_flare22" / \
        "Case_00002.nii.gz"
    assert array(label).max() == 11


def test_an_interrupted_conversion_resumes_where_it_stopped(tmp_path, capsys, monkeypatch):
    release = flare24_tree(tmp_path / "release")
    real_copy, copies = shutil.copyfile, []

    def interrupted_copy(src, dst):  # Ctrl-C from the fifth file on
        if len(copies) == 4:
            raise KeyboardInterrupt
        copies.append(dst)
        return real_copy(src, dst)

    monkeypatch.setattr(convert_module.shutil, "copyfile", interrupted_copy)
    args = ["-i", str(release), "-d", "222", "-o", str(tmp_path / "raw"), "-np", "1"]
    code, _, err = run_cli(capsys, *args)
    assert code == 130 and "rerun the same command" in err
    ds = tmp_path / "raw" / "Dataset222_FLARE24"
    assert not (ds / "dataset.json").exists()
    assert json.loads((ds / REPORT).read_text())["state"] == "converting"
    assert not [p for p in ds.rglob(".tmp-*")]  # no half-written file left
    assert len(list(ds.glob("*s*/*.nii.gz"))) == 4  # the files copied before it, each complete
    monkeypatch.setattr(convert_module.shutil, "copyfile", real_copy)
    code, out, err = run_cli(capsys, *args)
    assert code == EXIT_OK, err
    assert "8 files written, 4 already in place" in out  # 12 files: the 4 copied before the interruption kept
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 5


def test_ctrl_c_cancels_the_files_not_started(tmp_path, capsys, monkeypatch):
    """Ctrl-C reaches the main thread while the copying threads work: the files being copied are finished, the rest
    are not started."""
    release = flare24_tree(tmp_path / "release")
    real_copy, real_tqdm = shutil.copyfile, convert_module.tqdm

    def slow_copy(src, dst):
        time.sleep(0.2)
        return real_copy(src, dst)

    def interrupted_after_one(iterable, **kwargs):
        for i, item in enumerate(real_tqdm(iterable, **kwargs)):
            if i == 1 and kwargs.get("desc") == "copying":
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(convert_module.shutil, "copyfile", slow_copy)
    monkeypatch.setattr(convert_module, "tqdm", interrupted_after_one)
    code, _, _ = run_cli(capsys, "-i", str(release), "-d", "224", "-o", str(tmp_path / "raw"), "-np", "1")
    assert code == 130
    written = list((tmp_path / "raw" / "Dataset224_FLARE24").glob("*s*/*"))
    assert 0 < len(written) <= 6 and not [p for p in written if p.name.startswith(".tmp-")]  # of 12 files


def test_a_label_on_another_grid_is_left_out_and_listed(tmp_path, capsys):
    release = flare24_tree(tmp_path / "release")
    write(release / "train_pseudo_label" / "flare22_aladdin5_pseudo" / "Case2.nii.gz", 2, shape=(3, 4, 6))
    code, out, _ = run_cli(capsys, "-i", str(release), "-d", "223", "-o", str(tmp_path / "raw"))
    assert code == EXIT_FAILED_CASES  # the others converted
    assert "Case_00002_0000.nii.gz: label grid differs" in out
    ds = tmp_path / "raw" / "Dataset223_FLARE24"
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 4
    assert not (ds / "imagesTr" / "Case_00002_0000.nii.gz").exists()


def test_an_unreadable_label_is_left_out_and_listed(tmp_path, capsys):
    release = flare24_tree(tmp_path / "release")
    (release / "train_gt_label" / "labelsTr" / "FLARE22_Tr_0001.nii.gz").write_bytes(b"not a NIfTI file")
    code, out, err = run_cli(capsys, "-i", str(release), "-d", "225", "-o", str(tmp_path / "raw"))
    assert code == EXIT_FAILED_CASES and "Traceback" not in err
    assert "FLARE22_Tr_0001_0000.nii.gz: image or label unreadable" in out
    ds = tmp_path / "raw" / "Dataset225_FLARE24"
    assert (ds / TRUSTED_CASES).read_text().split() == ["FLARE22_Tr_0002"]


# --- refusals: one line, exit 2, nothing written --------------------------------------------------------------------

def refused(capsys, tmp_path: Path, *args: str) -> str:
    code, out, err = run_cli(capsys, *args)
    assert code == EXIT_USAGE, out + err
    assert err.startswith("nnUNetv2_flare_convert: ") and err.count("\n") == 1, err
    return err


def test_refusals(tmp_path, capsys):
    release = flare24_tree(tmp_path / "release")
    out = str(tmp_path / "raw")
    assert "matches none of FLARE's release layouts" in refused(capsys, tmp_path, "-i", str(release / "validation"),
                                                                "-d", "230", "-o", out)
    (release / "train_gt_label" / "labelsTr" / "FLARE22_Tr_0002.nii.gz").unlink()
    err = refused(capsys, tmp_path, "-i", str(release), "-d", "230", "-o", out)
    assert "1 image(s) have no label where one is required, e.g. " in err and "FLARE22_Tr_0002_0000" in err
    write(release / "train_gt_label" / "labelsTr" / "FLARE22_Tr_0002.nii.gz", 2)
    packed = release / "train_pseudo_label" / "flare22_aladdin5_pseudo"
    shutil.rmtree(packed)
    (packed.parent / "pseudo_label_aladdin5_flare22.7z").write_bytes(b"7z")
    assert "not extracted yet" in refused(capsys, tmp_path, "-i", str(release), "-d", "230", "-o", out)
    assert "--pseudo_labels nowhere: not a folder" in refused(
        capsys, tmp_path, "-i", str(release), "-d", "230", "-o", out, "--pseudo_labels", "nowhere")
    assert "would lie inside the release" in refused(capsys, tmp_path, "-i", str(release), "-d", "230", "-o",
                                                     str(release / "converted"), "--pseudo_labels", "blackbean")
    (tmp_path / "raw" / "Dataset230_Other").mkdir(parents=True)
    assert "already holds Dataset230_Other" in refused(capsys, tmp_path, "-i", str(release), "-d", "230", "-o", out,
                                                       "--pseudo_labels", "blackbean")
    assert not (tmp_path / "raw" / "Dataset230_FLARE24").exists()
    code, _, _ = run_cli(capsys, "-i", str(release), "-d", "231", "-o", out, "--pseudo_labels", "blackbean")
    assert code == EXIT_OK
    assert "other settings (pseudo_labels)" in refused(capsys, tmp_path, "-i", str(release), "-d", "231", "-o", out,
                                                       "--pseudo_labels", "none")
    foreign = tmp_path / "raw" / "Dataset232_FLARE24"
    write(foreign / "imagesTr" / "x_0000.nii.gz")
    assert "was not written by nnUNetv2_flare_convert" in refused(capsys, tmp_path, "-i", str(release), "-d", "232",
                                                                  "-o", out, "--pseudo_labels", "blackbean")
    assert "-np must be at least 1" in refused(capsys, tmp_path, "-i", str(release), "-d", "233", "-o", out, "-np", "0")


def test_dry_run_writes_nothing(tmp_path, capsys):
    release = flare24_tree(tmp_path / "release")
    code, out, _ = run_cli(capsys, "-i", str(release), "-d", "240", "-o", str(tmp_path / "raw"), "--dry_run")
    assert code == EXIT_OK and "dry run: would write" in out and "5 training cases, 1 validation" in out
    assert not (tmp_path / "raw").exists()


# --- the miniature release (tools/make_flare24_miniature.py) -------------------------------------------------------

@pytest.mark.slow
def test_the_miniature_release_converts_case_for_case(tmp_path):
    """The miniature has the release's names (aladdin5's Case1 ... Case9, Case_00010), folders and archive debris; its
    conversion keeps every label voxel for voxel and every grid, and nnU-Net accepts the dataset."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnunetv2_flare.planning.dataset_checks import require_flare_labels
    release = load_tool("make_flare24_miniature").write_miniature_release(tmp_path, num_labelled=2, num_pseudo=10,
                                                                          num_validation=1, num_hidden=1)
    before = snapshot(release)
    result = convert_flare_release(release, 950, tmp_path / "raw", progress=False)
    assert result.complete and not result.failed and snapshot(release) == before
    counts = result.plan.counts()
    assert {name: (c["images"], c["converted"], c["left_out"], c["unmatched_labels"]) for name, c in counts.items()} \
        == {LABELLED: (2, 2, 0, 0), PSEUDO: (10, 10, 0, 0), VALIDATION: (1, 1, 0, 0)}
    assert counts[PSEUDO]["matched_by"] == {SAME_NAME: 1, CHANNEL: 0, NUMBER: 9}  # Case_00010; Case1 ... Case9
    ds = result.folder
    for c in json.loads((ds / REPORT).read_text())["cases"]:
        split = c["split"]
        for source, target in ((c["image"], ds / f"images{split}" / f"{c['case']}_0000.nii.gz"),
                               (c["label"], ds / f"labels{split}" / f"{c['case']}.nii.gz")):
            a, b = sitk.ReadImage(str(release / source)), sitk.ReadImage(str(target))
            assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
            assert (a.GetSize(), a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == \
                   (b.GetSize(), b.GetSpacing(), b.GetOrigin(), b.GetDirection())
    dataset_json = json.loads((ds / "dataset.json").read_text())
    require_flare_labels(dataset_json, ds.name)  # what nnUNetv2_flare_plan_and_preprocess checks first
    verify_dataset_integrity(str(ds), num_processes=1)  # nnU-Net's own check (raises on any problem)
