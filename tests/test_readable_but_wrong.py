"""Inputs that read fine but are not what the command needs, the --report on resume, and a fuzz of
nnUNetv2_flare_predict's argument checks. In-process and on small arrays: a few seconds in all."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings, strategies as st

from nnunetv2_flare.cli_errors import UsageError
from nnunetv2_flare.inference.batch.report import EARLIER_RUN_KEY
from nnunetv2_flare.inference.cli.predict import parse_arguments
from nnunetv2_flare.inference.core.settings import FOLLOW_ORGANS_ROUNDS
from nnunetv2_flare.inference.inputs.checks import InputRefused
from unusual_inputs import array_predictor, body_ct, with_array, write


def put(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write(image, path)


def label_map_like(image: sitk.Image, dtype=np.uint8) -> sitk.Image:
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=dtype)
    array[4:12, 10:30, 10:30] = 1
    array[6:10, 12:20, 30:40] = 6
    array[5:8, 25:35, 5:12] = 13
    return with_array(image, array)


# ------------------------------------------------------------------------------------------------ label maps
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_a_label_map_is_refused_not_segmented(dtype):
    with pytest.raises(InputRefused, match="a label map, not a CT") as info:
        array_predictor().run(label_map_like(body_ct(), dtype))
    assert "\n" not in str(info.value) and "4 distinct whole values 0..13" in str(info.value)


def test_a_label_map_in_a_batch_fails_alone(tmp_path):
    folder = tmp_path / "in"
    put(body_ct(), folder / "ct_0000.nii.gz")
    put(label_map_like(body_ct()), folder / "labels_0000.nii.gz")
    report = tmp_path / "report.json"
    result = array_predictor().predict_files([folder], tmp_path / "out", report=report)
    assert result.done == ["ct"] and list(result.failed) == ["labels"]
    entry = json.loads(report.read_text())["cases"]["labels"]
    assert entry["kind"] == "refused" and "label map" in entry["error"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct.nii.gz"]


def test_ct_like_images_are_not_taken_for_label_maps():
    image = body_ct()
    a = sitk.GetArrayFromImage(image).astype(np.float32)
    windowed = np.clip((a + 160) / 400 * 255, 0, 255).round().astype(np.uint8)  # 8-bit windowed: ~all 256 values
    result = array_predictor().run(with_array(image, windowed))
    assert any(w.startswith("No air") for w in result.warnings)  # accepted with the existing warning


# ------------------------------------------------------------------------------------------------ channels
def test_second_channel_is_refused_up_front_but_numbered_case_names_are_cases(tmp_path):
    folder = tmp_path / "in"
    for name in ("a_0000.nii.gz", "scan_0001.nii.gz", "scan_0002.nii.gz"):
        put(body_ct(), folder / name)
    result = array_predictor().predict_files([folder], tmp_path / "out")
    assert sorted(result.done) == ["a", "scan_0001", "scan_0002"]  # no scan_0000: numbered cases, not channels
    put(body_ct(), folder / "a_0001.nii.gz")
    with pytest.raises(UsageError, match="channel 0001 of case a"):
        array_predictor().predict_files([folder], tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------------------ the report
def test_report_in_a_missing_folder_is_created_before_the_batch(tmp_path):
    put(body_ct(), tmp_path / "a_0000.nii.gz")
    report = tmp_path / "new" / "deeper" / "r.json"
    array_predictor().predict_files([tmp_path / "a_0000.nii.gz"], tmp_path / "out", report=report)
    assert json.loads(report.read_text())["cases"]["a"]["status"] == "done"


def test_report_that_cannot_be_written_is_refused_before_any_output(tmp_path):
    put(body_ct(), tmp_path / "a_0000.nii.gz")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        array_predictor().predict_files([tmp_path / "a_0000.nii.gz"], tmp_path / "out",
                                        report=tmp_path / "afile" / "r.json")
    assert not (tmp_path / "out").exists()


def test_resuming_with_the_same_report_keeps_the_entries_of_finished_cases(tmp_path):
    folder, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "report.json"
    put(body_ct(), folder / "a_0000.nii.gz")
    array_predictor().predict_files([folder], out, report=report)
    first = json.loads(report.read_text())["cases"]["a"]
    put(body_ct(seed=1), folder / "b_0000.nii.gz")
    put(label_map_like(body_ct()), folder / "c_0000.nii.gz")
    array_predictor().predict_files([folder], out, report=report)
    array_predictor().predict_files([folder], out, report=report)  # a third run: still there
    cases = json.loads(report.read_text())
    a = cases["cases"]["a"]
    assert a["status"].startswith("skipped: output exists") and a[EARLIER_RUN_KEY] is True
    assert a["organ_volumes_ml"] == first["organ_volumes_ml"] and a["crop_box"] == first["crop_box"]
    assert cases["cases"]["b"]["status"].startswith("skipped") and "organ_volumes_ml" in cases["cases"]["b"]
    assert list(cases["failed"]) == ["c"]
    (folder / "c_0000.nii.gz").unlink()  # the bad case is fixed by removing it: its failure stays on record
    array_predictor().predict_files([folder], out, report=report, overwrite=True)
    cases = json.loads(report.read_text())["cases"]
    assert cases["a"]["status"] == "done" and EARLIER_RUN_KEY not in cases["a"]


def test_an_unreadable_earlier_report_is_refused_not_replaced(tmp_path):
    """A file that is not a prediction report is never written over (it used to be replaced
    with a warning, and so could be any file, the input CT included)."""
    put(body_ct(), tmp_path / "a_0000.nii.gz")
    report = tmp_path / "r.json"
    report.write_text("{not json")
    with pytest.raises(UsageError, match="is not a JSON file, not a prediction report"):
        array_predictor().predict_files([tmp_path / "a_0000.nii.gz"], tmp_path / "out", report=report)
    assert report.read_text() == "{not json" and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ argument fuzz
FLAGS = ["-i", "-o", "-d", "-f", "-m1", "-m2", "-tr", "-c", "-p", "-chk", "-device", "--backend", "--precision",
         "--threads", "--overwrite", "--continue_prediction", "--report", "--margin_mm", "--orientation",
         "-step_size", "--restore", "--follow_organs", "--disable_tta", "--tta", "--shift_tta", "-num_parts",
         "-part_id", "--roi_subset", "--split_masks", "--statistics", "--preview", "--color_table", "--output_type",
         "--disable_progress_bar", "-h", "--nope"]
VALUES = ["x", "220", "Dataset220_FLARE", "abc", "0", "-1", "1", "3", "0.5", "1.5", "nan", "inf", "-inf", "LPS",
          "RAS", "XYZ", "as_read", "openvino", "bf16", "dicom_seg", "all", "", " ", "liver", "r.json", "/", "-",
          "--", "é", "1e309"]
arguments = st.lists(st.one_of(st.sampled_from(FLAGS), st.sampled_from(VALUES), st.text(max_size=6)), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arguments)
def test_fuzz_predict_arguments_never_crash(argv):
    """Any argument list is parsed and checked, or refused with exit 2 and one line; -h exits 0."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout_to_nothing():
        try:
            args = parse_arguments(argv)
        except SystemExit as e:
            assert e.code in (0, 2)
            if e.code == 2:
                assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
            return
        except UsageError as e:
            assert "\n" not in str(e) and str(e)
            return
    assert args.i and args.o is not None and (args.d or (args.m1 and args.m2))


def redirect_stdout_to_nothing():
    from contextlib import redirect_stdout
    return redirect_stdout(io.StringIO())


def test_one_line_usage_errors_name_the_fix():
    for argv, expect in ((["-i", "x", "-o", "y"], "name the models"),
                         (["-i", "x", "-o", "y", "-m1", "a"], "give both -m1"),
                         (["-i", "x", "-o", "y", "-d", "1", "--margin_mm", "nan"], "--margin_mm"),
                         (["-i", "x", "-o", "y", "-d", "1", "--follow_organs", "-1"], "--follow_organs"),
                         (["-i", "x", "-o", "y", "-d", "1", "--report", "dir/"], "names a folder")):
        with pytest.raises(UsageError, match=expect):
            parse_arguments(argv)
    assert parse_arguments(["-i", "x", "-o", "y", "-d", "1", "--follow_organs"]).follow_organs == FOLLOW_ORGANS_ROUNDS
    assert parse_arguments(["-i", "x", "-o", "y", "-d", "1"]).follow_organs == 0
