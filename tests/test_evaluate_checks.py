"""NnUNetv2_flare_evaluate checks what it scores. A file that is empty, truncated, unreadable or not a FLARE
label map (a CT in HU, TotalSegmentator's ids, fractional values) stops the command with one line naming it; names
that match nothing are an error, unmatched ones are listed; the summary never replaces a reference or any file that
is not an earlier summary. On the real TotalSegmentator label maps of ../shared/data/real and small arrays."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cascade_oracles import real_data
from nnunetv2_flare.evaluation.cli import main
from nnunetv2_flare.evaluation.evaluate_folders import evaluate_folders

pytestmark = pytest.mark.real_data
REFERENCE = "totalsegmentator/example_seg_fast_flare13.nii.gz"  # 122 x 101 x 30 at 3 mm, FLARE ids


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    (ref / "a.nii.gz").write_bytes(real_data(REFERENCE).read_bytes())
    return ref, pred


def put(path: Path, array: np.ndarray) -> None:
    """`array` (z, y, x) on the reference's grid."""
    reference = sitk.ReadImage(str(real_data(REFERENCE)))
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))


def reference_array() -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(real_data(REFERENCE))))


def refused(capsys, argv: list[str], expect: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("cut, expect", [(1000, "truncated"), (0, "empty (0 bytes)")])
def test_truncated_and_empty_predictions_are_errors(folders, capsys, cut, expect):
    ref, pred = folders
    full = (ref / "a.nii.gz").read_bytes()
    assert len(full) > 2000
    (pred / "a.nii.gz").write_bytes(full[:cut])
    err = refused(capsys, ["-ref", str(ref), "-pred", str(pred)], expect)
    assert "a.nii.gz" in err and not (pred / "summary_flare.json").exists()


def test_an_unreadable_reference_is_an_error(folders, capsys):
    ref, pred = folders
    (pred / "a.nii.gz").write_bytes((ref / "a.nii.gz").read_bytes())
    (ref / "b.nii.gz").write_bytes(b"this is not an image at all, but it is long enough to be read")
    refused(capsys, ["-ref", str(ref), "-pred", str(pred)], "b.nii.gz")


@pytest.mark.parametrize("source, expect", [("totalsegmentator/example_seg_fast.nii.gz", "values 0..117"),
                                            ("totalsegmentator/example_ct_sm.nii.gz", "a CT in HU?")])
def test_ct_and_other_label_sets_are_not_scored_as_flare_labels(folders, capsys, source, expect):
    ref, pred = folders
    (pred / "a.nii.gz").write_bytes(real_data(source).read_bytes())  # same grid as the reference
    refused(capsys, ["-ref", str(ref), "-pred", str(pred)], expect)


def test_fractional_labels_are_an_error_and_whole_floats_score_as_integers(folders, capsys):
    ref, pred = folders
    labels = reference_array()
    put(pred / "a.nii.gz", labels.astype(np.float32) + np.float32(0.5) * (labels == 1))
    refused(capsys, ["-ref", str(ref), "-pred", str(pred)], "not whole numbers")
    put(pred / "a.nii.gz", labels.astype(np.float32))
    as_float = evaluate_folders(ref, pred, progress=False)
    put(pred / "a.nii.gz", labels)
    assert evaluate_folders(ref, pred, progress=False)["mean_DSC"] == as_float["mean_DSC"] == 1.0


def test_no_matching_name_is_an_error_and_unmatched_predictions_are_listed(folders, capsys):
    ref, pred = folders
    refused(capsys, ["-ref", str(ref), "-pred", str(pred)], "no prediction in")  # empty folder
    put(pred / "a_pred.nii.gz", reference_array())
    err = refused(capsys, ["-ref", str(ref), "-pred", str(pred)], "matched to references by file name")
    assert "a_pred.nii.gz" in err and "a.nii.gz" in err
    put(pred / "a.nii.gz", reference_array())
    assert main(["-ref", str(ref), "-pred", str(pred)]) == 0
    assert "1 prediction(s) had no reference of their name and were not scored: a_pred.nii.gz" in \
        capsys.readouterr().out
    summary = json.loads((pred / "summary_flare.json").read_text())
    assert summary["unmatched_predictions"] == ["a_pred.nii.gz"] and summary["num_cases"] == 1


def test_the_summary_never_replaces_a_reference_or_a_foreign_file(folders, capsys):
    ref, pred = folders
    put(pred / "a.nii.gz", reference_array())
    reference = hashlib.sha256((ref / "a.nii.gz").read_bytes()).hexdigest()
    refused(capsys, ["-ref", str(ref), "-pred", str(pred), "-o", str(ref / "a.nii.gz")],
            "is a label file of the folders being scored")
    refused(capsys, ["-ref", str(ref), "-pred", str(pred), "-o", str(ref / "new.nii.gz")],
            "is a label file of the folders being scored")
    assert hashlib.sha256((ref / "a.nii.gz").read_bytes()).hexdigest() == reference
    notes = pred.parent / "notes.json"
    notes.write_text(json.dumps({"cases": {}, "settings": {}}))  # a prediction report, not a summary
    refused(capsys, ["-ref", str(ref), "-pred", str(pred), "-o", str(notes)], "a JSON file of another kind")
    summary = pred.parent / "summary.json"
    for _ in range(2):  # its own summary is replaced
        assert main(["-ref", str(ref), "-pred", str(pred), "-o", str(summary)]) == 0
    assert json.loads(summary.read_text())["mean_DSC"] == 1.0
