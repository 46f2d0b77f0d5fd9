"""nnUNetv2_flare_predict end to end on small random-weight model folders: naming, geometry, report,
continue/overwrite semantics, a batch with an unreadable case, -d resolution and error messages."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cascade_oracles import real_data, rotation_direction, synthetic_case
from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings
from nnunetv2_flare.inference.cli.predict import main
from nnunetv2_flare.labels import FLARE_ORGANS


@pytest.fixture(scope="module")
def results(random_cascade) -> Path:
    return random_cascade[0].parents[1]


@pytest.fixture
def cases(tmp_path) -> Path:
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    a, _ = synthetic_case(size_xyz=(40, 36, 20), spacing=(1.5, 1.7, 4.0), direction=rotation_direction(0.2, 0.5))
    b, _ = synthetic_case(size_xyz=(30, 30, 16), spacing=(2.0, 2.0, 5.0), seed=1)
    sitk.WriteImage(a, str(folder / "caseA_0000.nii.gz"))
    sitk.WriteImage(b, str(folder / "caseB.mha"))
    return folder


def model_args(results: Path) -> list[str]:
    base = results / "Dataset220_FLARE"
    return ["-m1", str(base / "nnUNetTrainerFlareLocator__FlarePlans__flare_locator"),
            "-m2", str(base / "nnUNetTrainerFlareOrgans__FlarePlans__flare_organs")]


@pytest.mark.slow
def test_cli_predicts_folder_with_nnunet_names_geometry_and_report(results, cases, tmp_path):
    out, report = tmp_path / "pred", tmp_path / "report.json"
    code = main(["-i", str(cases), "-o", str(out), *model_args(results), "--report", str(report), "--threads", "2",
                 "--disable_progress_bar"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["caseA.nii.gz", "caseB.nii.gz"]
    for name, source in (("caseA", "caseA_0000.nii.gz"), ("caseB", "caseB.mha")):
        pred, image = sitk.ReadImage(str(out / f"{name}.nii.gz")), sitk.ReadImage(str(cases / source))
        assert pred.GetPixelID() == sitk.sitkUInt8
        assert pred.GetSize() == image.GetSize()
        np.testing.assert_allclose(pred.GetSpacing(), image.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(pred.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(pred.GetDirection(), image.GetDirection(), atol=1e-5)
        assert sitk.GetArrayViewFromImage(pred).max() < 14
    data = json.loads(report.read_text())
    assert data["failed"] == {} and data["settings"]["threads"] == 2
    entry = data["cases"]["caseA"]
    assert entry["status"] == "done"
    for stage in ("read", "locate_resize", "locate_network", "segment_resample", "segment_network", "postprocess",
                  "restore", "write", "total"):
        assert entry["timings_s"][stage] >= 0
    assert set(entry["organ_volumes_ml"]) == set(FLARE_ORGANS.values())
    assert entry["image_size_xyz"] == [40, 36, 20]
    box = entry["crop_box"]
    assert all(0 <= a < b <= n for a, b, n in zip(box["start_xyz"], box["stop_xyz"], [40, 36, 20]))
    assert isinstance(entry["warnings"], list) and entry["n_patches"] >= 1
    # volumes agree with the written file
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "caseA.nii.gz")))
    voxel_ml = 1.5 * 1.7 * 4.0 / 1000
    for i, organ in FLARE_ORGANS.items():
        assert entry["organ_volumes_ml"][organ] == pytest.approx((pred == i).sum() * voxel_ml, abs=0.01)


@pytest.mark.slow
def test_existing_outputs_are_kept_only_for_the_same_request_unless_overwrite(results, cases, tmp_path):
    """A file at an output's name that records no request of this command (here a 2^3
    marker) is neither kept nor replaced without --overwrite; it used to be kept by its name alone."""
    out = tmp_path / "pred"
    out.mkdir()
    marker = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    sitk.WriteImage(marker, str(out / "caseA.nii.gz"))
    report = tmp_path / "r.json"
    assert main(["-i", str(cases), "-o", str(out), *model_args(results), "--report", str(report),
                 "--disable_progress_bar"]) == 1
    assert sitk.ReadImage(str(out / "caseA.nii.gz")).GetSize() == (2, 2, 2)  # left as it was
    data = json.loads(report.read_text())
    assert data["cases"]["caseA"]["kind"] == "refused" and "records no request" in data["cases"]["caseA"]["error"]
    assert data["cases"]["caseB"]["status"] == "done"
    assert main(["-i", str(cases / "caseA_0000.nii.gz"), "-o", str(out), *model_args(results), "--overwrite",
                 "--disable_progress_bar"]) == 0
    assert sitk.ReadImage(str(out / "caseA.nii.gz")).GetSize() == (40, 36, 20)  # predicted again
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert main(["-i", str(cases), "-o", str(out), *model_args(results), "--report", str(report),
                 "--disable_progress_bar"]) == 0
    data = json.loads(report.read_text())
    assert all(data["cases"][c]["status"].startswith("skipped: output exists") for c in ("caseA", "caseB"))


@pytest.mark.slow
def test_unreadable_case_fails_alone_and_exit_code_is_nonzero(results, cases, tmp_path, capsys):
    (cases / "broken_0000.nii.gz").write_bytes(b"not a nifti file at all")
    out, report = tmp_path / "pred", tmp_path / "r.json"
    code = main(["-i", str(cases), "-o", str(out), *model_args(results), "--report", str(report),
                 "--disable_progress_bar"])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["caseA.nii.gz", "caseB.nii.gz"]
    data = json.loads(report.read_text())
    assert list(data["failed"]) == ["broken"] and data["cases"]["broken"]["status"] == "failed"
    assert "FAILED broken" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.real_data
def test_dataset_id_resolution_file_list_and_dicom_folder(results, cases, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(results))
    dicom = real_data("totalsegmentator/example_ct_dicom")
    out = tmp_path / "pred"
    code = main(["-i", str(cases / "caseA_0000.nii.gz"), str(dicom), "-o", str(out), "-d", "220", "-f", "all",
                 "-device", "cpu", "--disable_progress_bar"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["caseA.nii.gz", "example_ct_dicom.nii.gz"]
    pred = sitk.ReadImage(str(out / "example_ct_dicom.nii.gz"))
    assert pred.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(pred.GetSpacing(), (0.9765625, 0.9765625, 2.0), atol=1e-6)


def test_clear_errors(results, cases, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_results", raising=False)
    assert main(["-i", str(cases), "-o", str(tmp_path / "o"), "-d", "220"]) == 2
    assert "nnUNet_results is not set" in capsys.readouterr().err
    assert main(["-i", str(cases), "-o", str(tmp_path / "o"), *model_args(results), "-f", "3"]) == 2
    assert "fold_3" in capsys.readouterr().err
    assert main(["-i", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "o"), *model_args(results)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["-i", str(cases), "-o", str(tmp_path / "o"), *model_args(results), "--backend", "torch",
                 "--precision", "bf16"]) == 2
    assert "bf16 runs on the openvino backend only" in capsys.readouterr().err


@pytest.mark.slow
def test_predictor_reusable_and_matches_cli_output(results, cases, tmp_path):
    base = results / "Dataset220_FLARE"
    predictor = FlareCascadePredictor.from_folders(base / "nnUNetTrainerFlareLocator__FlarePlans__flare_locator",
                                                   base / "nnUNetTrainerFlareOrgans__FlarePlans__flare_organs",
                                                   ModelSettings(threads=2), CascadeSettings(progress=False))
    first = sitk.GetArrayFromImage(predictor.predict(cases / "caseA_0000.nii.gz"))
    predictor.predict(cases / "caseB.mha")
    again = sitk.GetArrayFromImage(predictor.predict(sitk.ReadImage(str(cases / "caseA_0000.nii.gz"))))
    np.testing.assert_array_equal(first, again)  # deterministic, no state carried between cases
    main(["-i", str(cases / "caseA_0000.nii.gz"), "-o", str(tmp_path / "p"), *model_args(results),
          "--disable_progress_bar"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p" / "caseA.nii.gz"))),
                                  first)


@pytest.mark.slow
def test_console_script_runs(results, cases, tmp_path):
    exe = shutil.which("nnUNetv2_flare_predict")
    cmd = [exe] if exe else [sys.executable, "-m", "nnunetv2_flare.inference.cli.predict"]
    proc = subprocess.run(cmd + ["-i", str(cases / "caseB.mha"), "-o", str(tmp_path / "p"), *model_args(results),
                                 "--disable_progress_bar", "--threads", "1"],
                          capture_output=True, encoding="utf-8", timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p" / "caseB.nii.gz").is_file()
