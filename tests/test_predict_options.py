"""nnUNetv2_flare_predict's nnU-Net and TotalSegmentator options (issue 17), through the CLI on the real CTs of
../shared/data/real with tiny random-weight model folders (several folds). One module-scoped model set and input
folder are shared by all tests; OpenVINO converts each model once (cached in the model folders)."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cascade_oracles import real_data
from nnunetv2_flare.inference.predict_cli import build_parser, main
from nnunetv2_flare.inference.random_models import write_random_cascade

SMALL = dict(locator_size=(64, 64, 64), organ_patch_size=(32, 32, 32), organ_spacing=(4.0, 3.0, 3.0))
REAL_CASES = {  # case name -> file or DICOM folder under ../shared/data/real
    "example_ct": "totalsegmentator/example_ct.nii.gz",
    "example_ct_sm": "totalsegmentator/example_ct_sm.nii.gz",
    "example_ct_dicom": "totalsegmentator/example_ct_dicom",
    "3Dircadb1.1_PATIENT_DICOM": "3dircadb/3Dircadb1.1_PATIENT_DICOM.nii.gz",
    "TCGA-09-2043_CEAxial3.0WITH_CE_z056-159": "tcga-ov/TCGA-09-2043_CEAxial3.0WITH_CE_z056-159.nii.gz",
}
QUIET = ["--disable_progress_bar", "--threads", "1"]  # 1 thread: torch's 2 threads crawl on a shared 2-core host


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Locator and organ model folders with folds all, 0 and 1 (different random weights per fold)."""
    folder = tmp_path_factory.mktemp("results")
    for seed_offset, fold in enumerate(("all", 0, 1)):
        locator, organs = write_random_cascade(folder, "Dataset220_FLARE", tiny=True, fold=fold,
                                               seed_offset=10 * seed_offset, **SMALL)
    return {"locator": locator, "organs": organs}


def model_args(models: dict[str, Path]) -> list[str]:
    return ["-m1", str(models["locator"]), "-m2", str(models["organs"])]


@pytest.fixture(scope="module")
def real_inputs(tmp_path_factory) -> Path:
    """A folder of links to the real CTs (never copies): NIfTI files and the DICOM series folder."""
    folder = tmp_path_factory.mktemp("real_inputs")
    for name, relative in REAL_CASES.items():
        source = real_data(relative)
        (folder / (name if source.is_dir() else source.name)).symlink_to(source)
    return folder


def report_of(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ nnU-Net flags
PACKAGE_PARSERS = ["nnunetv2_flare.inference.predict_cli", "nnunetv2_flare.planning.plan_and_preprocess",
                   "nnunetv2_flare.phantoms.cli", "nnunetv2_flare.pseudolabel.cli"]


@pytest.mark.parametrize("module", PACKAGE_PARSERS)
def test_no_parser_reads_a_prefix_as_another_option(module):
    assert importlib.import_module(module).build_parser().allow_abbrev is False


def test_part_id_is_not_plans_and_short_nnunet_flags_mean_the_organ_network():
    args = build_parser().parse_args(["-i", "x", "-o", "y", "-part_id", "2", "-num_parts", "3", "-c", "narrow",
                                      "-tr", "MyTrainer"])
    assert (args.part_id, args.num_parts, args.p) == (2, 3, "FlarePlans")
    assert (args.c2, args.tr2, args.c1) == ("narrow", "MyTrainer", "flare_locator")
    args = build_parser().parse_args(["-i", "x", "-o", "y", "-c1", "loc", "-chk", "checkpoint_best.pth"])
    assert (args.c1, args.c2, args.chk) == ("loc", "flare_organs", "checkpoint_best.pth")
    with pytest.raises(SystemExit):  # a prefix is an error, never a silent other option
        build_parser().parse_args(["-i", "x", "-o", "y", "-part", "1"])


def test_num_parts_3_predicts_every_real_case_exactly_once(models, real_inputs, tmp_path):
    out = tmp_path / "out"
    done: list[str] = []
    for part in range(3):
        report = tmp_path / f"report_{part}.json"
        assert main(["-i", str(real_inputs), "-o", str(out), *model_args(models), "-num_parts", "3", "-part_id",
                     str(part), "--report", str(report), *QUIET]) == 0
        cases = report_of(report)["cases"]
        assert all(entry["status"] == "done" for entry in cases.values())
        done += list(cases)
    assert sorted(done) == sorted(REAL_CASES)  # each case once, no part empty of work it should have
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.nii.gz" for name in REAL_CASES)
    assert [len(report_of(tmp_path / f"report_{k}.json")["cases"]) for k in range(3)] == [2, 2, 1]


def test_bad_part_is_one_line_error(models, real_inputs, tmp_path, capsys):
    assert main(["-i", str(real_inputs), "-o", str(tmp_path / "o"), *model_args(models), "-num_parts", "3",
                 "-part_id", "3", *QUIET]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "-part_id must be in 0..2" in err
