"""Nothing overwritten, nothing stale, nothing misplaced. A command writes only over files it wrote for that
purpose; an existing label file is kept only where it was made for the same request (input bytes, models,
options), and its companion files go with it; -o takes the documented formats; every part writes its report; the
API reads what the CLI reads. Mostly through the Python API with array "networks" (milliseconds a case); the CLI
where the command's own checks are the point."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cascade_oracles import real_data
from nnunetv2_flare.cli_errors import UsageError
from nnunetv2_flare.inference.batch.request_record import Request, decide, recorded_request
from nnunetv2_flare.inference.cli.predict import main
from nnunetv2_flare.inference.inputs.checks import InputRefused
from nnunetv2_flare.inference.inputs.reading import dicom_series_files
from nnunetv2_flare.inference.outputs.case_outputs import OutputOptions
from nnunetv2_flare.labels import FLARE_ORGANS
from unusual_inputs import array_predictor, body_ct, tmp_files, write, write_dicom_series

FAKE_MODELS = ["-m1", "no_locator", "-m2", "no_organs", "--disable_progress_bar"]  # refused before models load


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def size_of(path: Path) -> tuple[int, ...]:
    return sitk.ReadImage(str(path)).GetSize()


@pytest.fixture
def two_cts(tmp_path) -> tuple[Path, Path]:
    """Two CTs of different slice counts (as in the issue: 30 and 112 slices, smaller here)."""
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    write(body_ct(shape_zyx=(10, 40, 48)), a)
    write(body_ct(shape_zyx=(16, 40, 48), seed=1), b)
    return a, b


def one_line_refusal(capsys, expect: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
    return err


# ------------------------------------------------------------------------------------------------ written over
def test_report_that_is_the_input_ct_is_refused_and_the_ct_kept(two_cts, tmp_path, capsys):
    a, _ = two_cts
    before = digest(a)
    assert main(["-i", str(a), "-o", str(tmp_path / "out"), "--report", str(a), *FAKE_MODELS]) == 2
    one_line_refusal(capsys, "is an input of this run")
    assert digest(a) == before and not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="is an input of this run"):  # the API refuses it too
        array_predictor().predict_files([a], tmp_path / "out", report=a)


def test_report_that_is_an_output_of_the_run_is_refused(two_cts, tmp_path, capsys):
    a, b = two_cts
    out = tmp_path / "out"
    array_predictor().predict_files([a, b], out)
    kept = digest(out / "a.nii.gz")
    for report, extra in ((out / "a.nii.gz", []), (out / "b.png", ["--preview"]), (out / "b" / "liver.nii.gz",
                                                                                     ["--split_masks"]),
                          (tmp_path / "seg.nii.gz", None)):
        target = ["-o", str(out)] if extra is not None else ["-o", str(report)]
        inputs = [str(a), str(b)] if extra is not None else [str(a)]
        assert main(["-i", *inputs, *target, "--report", str(report), *(extra or []), *FAKE_MODELS]) == 2
        one_line_refusal(capsys, "is an output of this run")
    assert digest(out / "a.nii.gz") == kept


def test_report_over_a_file_that_is_not_a_prediction_report_is_refused(two_cts, tmp_path, capsys):
    a, _ = two_cts
    notes, summary, broken = tmp_path / "notes.txt", tmp_path / "summary.json", tmp_path / "broken.json"
    notes.write_text("my notes")
    summary.write_text(json.dumps({"mean_DSC": 0.8, "per_case": []}))
    broken.write_text("{not json")
    for path, why in ((notes, "is not a JSON file"), (summary, "a JSON file of another kind"),
                      (broken, "is not a JSON file")):
        before = digest(path)
        assert main(["-i", str(a), "-o", str(tmp_path / "out"), "--report", str(path), *FAKE_MODELS]) == 2
        assert why in one_line_refusal(capsys, "never written over")
        assert digest(path) == before
    report = tmp_path / "report.json"  # its own report is resumed
    array_predictor().predict_files([a], tmp_path / "out", report=report)
    array_predictor().predict_files([a], tmp_path / "out", report=report)
    assert json.loads(report.read_text())["cases"]["a"]["status"].startswith("skipped: output exists")


# ------------------------------------------------------------------------------------------------ kept = same request
def test_a_named_output_file_is_replaced_by_a_new_request(two_cts, tmp_path, capsys):
    a, b = two_cts
    kt = tmp_path / "kt.nii.gz"
    assert array_predictor().predict_files([a], kt).done == ["a"]
    assert size_of(kt) == (48, 40, 10)
    result = array_predictor().predict_files([b], kt)
    assert result.done == ["b"] and size_of(kt) == (48, 40, 16)  # b's slices, not a's
    assert result.report["cases"]["b"]["replaced"] == "it held the labels of another input"
    assert "replacing kt.nii.gz: it held the labels of another input" in capsys.readouterr().out
    again = array_predictor().predict_files([b], kt)
    assert again.skipped == ["b"] and again.done == []


def test_an_existing_file_without_a_record_is_never_kept_nor_replaced_without_overwrite(two_cts, tmp_path):
    a, b = two_cts
    before = digest(b)  # -o names an existing CT
    result = array_predictor().predict_files([a], b)
    assert result.done == result.skipped == [] and "records no request" in result.failed["a"]
    assert result.report["cases"]["a"]["kind"] == "refused" and digest(b) == before
    result = array_predictor().predict_files([a], b, overwrite=True)
    assert result.done == ["a"] and size_of(b) == (48, 40, 10) and recorded_request(b) is not None


def test_two_patients_series_of_one_name_never_share_labels(tmp_path):
    """Two DICOM series that both become CT_series1 in one output folder: the second is refused, not kept."""
    first, second = tmp_path / "patient1" / "CT_series1", tmp_path / "patient2" / "CT_series1"
    write_dicom_series(first, "1.2.3.1", 6, "s")
    write_dicom_series(second, "1.2.3.2", 9, "s")
    out = tmp_path / "out"
    assert array_predictor().predict_files([first], out).done == ["CT_series1"]
    labels = digest(out / "CT_series1.nii.gz")
    result = array_predictor().predict_files([second], out)
    assert result.skipped == [] and "holds the labels of another input" in result.failed["CT_series1"]
    assert digest(out / "CT_series1.nii.gz") == labels
    assert array_predictor().predict_files([first], out).skipped == ["CT_series1"]  # its own input: kept
    assert array_predictor().predict_files([second], out, overwrite=True).done == ["CT_series1"]
    assert size_of(out / "CT_series1.nii.gz")[2] == 9


def test_a_changed_input_at_the_same_path_or_other_options_are_predicted_again(two_cts, tmp_path):
    a, _ = two_cts
    out = tmp_path / "out"
    array_predictor().predict_files([a], out)
    write(body_ct(shape_zyx=(12, 40, 48), seed=5), a)  # the file was corrected in place
    result = array_predictor().predict_files([a], out)
    assert result.report["cases"]["a"]["replaced"] == "the input changed since its labels were made"
    assert size_of(out / "a.nii.gz")[2] == 12
    result = array_predictor(roi_subset=["liver"]).predict_files([a], out)
    assert result.report["cases"]["a"]["replaced"] == "its labels were made with other options"
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "a.nii.gz"))))) <= {0, 1}
    copy = tmp_path / "copy" / "a.nii.gz"  # the same bytes elsewhere: the same input
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    assert array_predictor(roi_subset=["liver"]).predict_files([copy], out).skipped == ["a"]


def test_a_two_file_input_is_known_by_its_data_file_too(tmp_path):
    write(body_ct(shape_zyx=(10, 40, 48)), tmp_path / "a.mhd")
    out = tmp_path / "out"
    array_predictor().predict_files([tmp_path / "a.mhd"], out)
    header = (tmp_path / "a.mhd").read_bytes()
    sitk.WriteImage(body_ct(shape_zyx=(10, 40, 48), seed=3), str(tmp_path / "a.mhd"))  # new voxels, same header
    assert (tmp_path / "a.mhd").read_bytes() == header
    result = array_predictor().predict_files([tmp_path / "a.mhd"], out)
    assert result.report["cases"]["a"]["replaced"] == "the input changed since its labels were made"


def test_companions_follow_their_label_file(two_cts, tmp_path, capsys):
    a, _ = two_cts
    out = tmp_path / "out"
    array_predictor().predict_files([a], out)
    everything = OutputOptions(split_masks=True, preview=True, color_table=True)
    result = array_predictor().predict_files([a], out, outputs=everything)  # a rerun that adds companions
    assert result.done == ["a"] and "other companion files" in result.report["cases"]["a"]["replaced"]
    assert sorted(p.name for p in out.iterdir()) == ["a", "a.ctbl", "a.nii.gz", "a.png"]
    assert len(list((out / "a").iterdir())) == len(FLARE_ORGANS)
    assert array_predictor().predict_files([a], out, outputs=everything).skipped == ["a"]
    (out / "a.png").unlink()  # a companion lost: the case is made whole again
    result = array_predictor().predict_files([a], out, outputs=everything)
    assert result.report["cases"]["a"]["replaced"].startswith("its companion") and (out / "a.png").is_file()
    # --overwrite --roi_subset liver after the full run: the old masks, preview and colour table go
    result = array_predictor(roi_subset=["liver"]).predict_files([a], out, overwrite=True)
    assert result.done == ["a"] and sorted(p.name for p in out.iterdir()) == ["a.nii.gz"]
    result = array_predictor(roi_subset=["liver"]).predict_files([a], out, overwrite=True,
                                                                 outputs=OutputOptions(split_masks=True))
    assert sorted(p.name for p in (out / "a").iterdir()) == ["liver.nii.gz"]
    capsys.readouterr()


def test_a_case_that_fails_midway_leaves_no_label_beside_new_companions(two_cts, tmp_path, monkeypatch):
    a, _ = two_cts
    out = tmp_path / "out"
    array_predictor().predict_files([a], out, outputs=OutputOptions(color_table=True))

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("nnunetv2_flare.inference.outputs.preview.render_preview", full_disk)
    result = array_predictor().predict_files([a], out, outputs=OutputOptions(color_table=True, preview=True))
    assert "No space left" in result.failed["a"]
    assert not (out / "a.nii.gz").exists()  # the old labels went first: the case reads as unfinished
    monkeypatch.undo()
    assert array_predictor().predict_files([a], out, outputs=OutputOptions(color_table=True)).done == ["a"]
    assert sorted(p.name for p in out.iterdir()) == ["a.ctbl", "a.nii.gz"]


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_the_record_survives_every_output_format(two_cts, tmp_path, ending):
    a, _ = two_cts
    target = tmp_path / f"seg{ending}"
    assert array_predictor().predict_files([a], target).done == ["a"]
    assert recorded_request(target) is not None
    assert array_predictor().predict_files([a], target).skipped == ["a"]


def test_parts_record_their_requests_and_a_whole_rerun_keeps_them(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(5):
        write(body_ct(shape_zyx=(8, 40, 48), seed=k), folder / f"case{k}_0000.nii.gz")
    out = tmp_path / "out"
    done = []
    for part in range(2):
        done += array_predictor().predict_files([folder], out, num_parts=2, part_id=part).done
    assert sorted(done) == [f"case{k}" for k in range(5)]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert len(array_predictor().predict_files([folder], out).skipped) == 5
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_decisions_for_every_difference(tmp_path):
    """decide() on its own: which part of a recorded request differs decides keep / predict again / refuse.
    Digests a (location), b (bytes), c (models), d (options)."""
    target = tmp_path / "t.nii.gz"
    recorded = Request("a0", "b0", "c0", "d0", "pD")
    image = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    image.SetMetaData("ITK_FileNotes", recorded.note())
    sitk.WriteImage(image, str(target))
    (tmp_path / "t.png").write_bytes(b"png")
    files = {"p": tmp_path / "t.png", "d": tmp_path / "t.dcm"}  # d asked for, none written (no organ found)
    cases = [(recorded, False, "keep", ""), (Request("a1", "b0", "c0", "d0", "pD"), False, "keep", ""),
             (Request("a0", "b1", "c0", "d0", "pD"), False, "predict", "the input changed"),
             (Request("a1", "b1", "c0", "d0", "pD"), False, "refuse", "another input"),
             (Request("a1", "b1", "c0", "d0", "pD"), True, "predict", "another input"),
             (Request("a0", "b0", "c1", "d0", "pD"), False, "predict", "other models"),
             (Request("a0", "b0", "c0", "d1", "pD"), False, "predict", "other options"),
             (Request("a0", "b0", "c0", "d0", "p"), False, "predict", "other companion files")]
    for wanted, named_file, action, why in cases:
        decision = decide(target, wanted, files, False, named_file)
        assert decision.action == action and why in decision.reason, (wanted, decision)
    assert decide(target, Request("a1", "b1", "c1", "d1"), files, True, False).action == "predict"  # --overwrite
    (tmp_path / "t.png").unlink()
    assert "t.png is missing" in decide(target, recorded, files, False, False).reason
    assert decide(tmp_path / "none.nii.gz", recorded, files, False, False).action == "predict"
    assert Request.parse(recorded.note()) == recorded and len(Request("a" * 10, *["b" * 10] * 3, "spcd").note()) <= 79


# ------------------------------------------------------------------------------------------------ -o formats
@pytest.mark.parametrize("output, expect", [("seg.mhd", "keeps its voxels in a second file"),
                                            ("seg.nhdr", "keeps its voxels in a second file"),
                                            ("seg.txt", "not a label file format"),
                                            ("seg.dcm", "not a label file format")])
def test_output_names_outside_the_documented_formats_are_refused(two_cts, tmp_path, capsys, output, expect):
    a, _ = two_cts
    assert main(["-i", str(a), "-o", str(tmp_path / output), *FAKE_MODELS]) == 2
    one_line_refusal(capsys, expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]  # no folder, no file


def test_a_trailing_slash_makes_a_dotted_name_a_folder_and_overwrite_leaves_no_temporaries(two_cts, tmp_path):
    a, _ = two_cts
    out = f"{tmp_path / 'labels.txt'}{os.sep}"
    assert array_predictor().predict_files([a], out).done == ["a"]
    assert (tmp_path / "labels.txt" / "a.nii.gz").is_file()
    target = tmp_path / "seg.mha"
    for _ in range(2):
        array_predictor().predict_files([a], target, overwrite=True)
    assert tmp_files(tmp_path) == [] and recorded_request(target) is not None


# ------------------------------------------------------------------------------------------------ parts
@pytest.mark.slow
def test_an_empty_part_still_writes_its_report(random_cascade, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        write(body_ct(seed=k), folder / f"c{k}_0000.nii.gz")
    locator, organs = random_cascade
    report = tmp_path / "report_part4.json"
    assert main(["-i", str(folder), "-o", str(tmp_path / "out"), "-m1", str(locator), "-m2", str(organs),
                 "-num_parts", "5", "-part_id", "4", "--report", str(report), "--disable_progress_bar",
                 "--threads", "1"]) == 0
    data = json.loads(report.read_text())
    assert data["cases"] == {} and data["settings"]["part_id"] == 4 and data["settings"]["num_parts"] == 5
    assert "part 4 of 5 holds no case (3 case(s) in all" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ reading
def test_a_folder_with_subfolders_and_no_series_is_one_line(tmp_path, capfd):
    (tmp_path / "study" / "a" / "b").mkdir(parents=True)
    (tmp_path / "study" / "a" / "notes.txt").write_text("x")
    assert main(["-i", str(tmp_path / "study"), "-o", str(tmp_path / "out"), *FAKE_MODELS]) == 2
    err = capfd.readouterr().err.strip()  # capfd: ITK writes its warnings from C++ straight to the descriptor
    assert len(err.splitlines()) == 1 and "no DICOM series found" in err and "WARNING" not in err, err


def test_the_api_finds_a_nested_dicom_series_as_the_cli_does(tmp_path):
    write_dicom_series(tmp_path / "patient" / "study" / "series", "1.2.3.9", 8, "s")
    predictor = array_predictor()
    nested = sitk.GetArrayFromImage(predictor.predict(tmp_path / "patient"))
    direct = sitk.GetArrayFromImage(predictor.predict(tmp_path / "patient" / "study" / "series"))
    np.testing.assert_array_equal(nested, direct)
    predictor.predict_files([tmp_path / "patient"], tmp_path / "out")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "study_series.nii.gz"))),
                                  nested)
    write_dicom_series(tmp_path / "patient" / "study" / "other", "1.2.3.10", 8, "s")
    with pytest.raises(InputRefused, match="holds 2 cases .study_other, study_series.; predict one at a time"):
        predictor.predict(tmp_path / "patient")


def test_roi_subset_names_ignore_case_spaces_and_aliases():
    predictor = array_predictor(roi_subset=["Liver", "IVC", "right-kidney"])
    assert predictor.label_names == {1: "liver", 2: "right_kidney", 6: "inferior_vena_cava"}
    with pytest.raises(ValueError, match="livers is not a label of this model"):
        array_predictor(roi_subset=["livers"])


@pytest.mark.real_data
def test_dicom_seg_of_a_series_without_study_uid_gets_one_with_a_warning(tmp_path):
    import pydicom

    from nnunetv2_flare.inference.outputs.dicom_seg import with_study_uid
    series = real_data("totalsegmentator/example_ct_dicom")
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_series_files(series)[:3]]
    assert not str(datasets[0].StudyInstanceUID)  # the anonymized example: blank study and series UIDs
    warnings: list[str] = []
    with_study_uid(datasets, warnings)
    uid = str(datasets[0].StudyInstanceUID)
    assert uid and all(str(ds.StudyInstanceUID) == uid for ds in datasets)
    assert len(warnings) == 2 and uid in warnings[0] and "SeriesInstanceUID" in warnings[1]
    warnings.clear()
    for ds in datasets:
        ds.SeriesInstanceUID = "1.2.3"
    with_study_uid(datasets, warnings)
    assert str(datasets[0].StudyInstanceUID) == uid and warnings == []  # one that has it keeps it


def test_organ_colours_are_told_apart_and_none_is_washed_out():
    import itertools

    from skimage.color import rgb2lab

    from nnunetv2_flare.inference.outputs.label_colors import label_colors
    colors = label_colors(FLARE_ORGANS)
    lab = {i: rgb2lab(np.asarray(c, float)[None, None] / 255)[0, 0] for i, c in colors.items()}
    closest = min(np.linalg.norm(lab[i] - lab[j]) for i, j in itertools.combinations(lab, 2))
    assert closest >= 25  # liver and stomach were 3.7 apart
    assert min(np.hypot(*lab[i][1:]) for i in lab) >= 30  # the duodenum was near-white (chroma 12)
