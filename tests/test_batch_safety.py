"""Batches lose nothing: output folder checked up front, a full disk fails one case cleanly, two processes
share an output folder, Ctrl-C leaves only complete files and a rerun finishes the rest. Real CLI subprocesses on
tiny random-weight model folders."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import nnunetv2_flare.inference.inputs.nifti_transforms as label_writer
from nnunetv2_flare.atomic_io import atomic_write
from nnunetv2_flare.inference.cli.predict import main
from unusual_inputs import array_predictor, body_ct, env_with_threads, tmp_files, write

CLI = [sys.executable, "-m", "nnunetv2_flare.inference.cli.predict"]


@pytest.fixture(scope="module")
def models(random_cascade) -> list[str]:
    locator, organs = random_cascade
    return ["-m1", str(locator), "-m2", str(organs)]


def make_cases(folder: Path, n: int, shape=(24, 48, 48)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"case{i:02d}" for i in range(n)]
    for i, name in enumerate(names):
        write(body_ct(shape_zyx=shape, seed=i), folder / f"{name}_0000.nii.gz")
    return names


def assert_complete_outputs(out: Path, names) -> None:
    for name in names:
        image = sitk.ReadImage(str(out / f"{name}.nii.gz"))  # raises on a partial file
        assert image.GetSize() == (48, 48, 24) and image.GetPixelID() == sitk.sitkUInt8


def test_unwritable_output_folder_is_refused_before_any_work(models, tmp_path, capsys):
    make_cases(tmp_path / "in", 1)
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main(["-i", str(tmp_path / "in"), "-o", str(bad), *models, "--disable_progress_bar"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("not a folder" in err or "cannot create" in err), err


def test_output_folder_without_write_permission(tmp_path, monkeypatch):
    """Root ignores chmod, so the denial is simulated at the probe's os.open."""
    import nnunetv2_flare.inference.batch.safety as batch_safety
    real_open = os.open

    def deny(path, flags, *args):
        if ".tmp-probe" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)
    monkeypatch.setattr(batch_safety.os, "open", deny)
    write(body_ct(), tmp_path / "a_0000.nii.gz")
    with pytest.raises(batch_safety.OutputFolderError, match="not writable .Permission denied"):
        array_predictor().predict_files([tmp_path / "a_0000.nii.gz"], tmp_path / "out")


def test_disk_full_fails_one_case_leaves_no_partial_file(tmp_path, monkeypatch):
    names = make_cases(tmp_path / "in", 3)

    def writer(image, path, compress=True):
        def partial(tmp: Path):
            if "case01" in Path(path).name:
                tmp.write_bytes(b"\x1f\x8b partial")  # half a file, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        atomic_write(path, partial)
    monkeypatch.setattr(label_writer, "write_image_atomic", writer)  # the writer of every label file
    out = tmp_path / "out"
    result = array_predictor().predict_files([tmp_path / "in"], out, report=tmp_path / "r.json")
    assert result.done == ["case00", "case02"] and list(result.failed) == ["case01"]
    assert result.failed["case01"] == "OSError: No space left on device (" + \
        next(iter(json.loads((tmp_path / "r.json").read_text())["failed"].values())).split("(")[1]
    assert "No space left" in result.failed["case01"]
    assert sorted(p.name for p in out.iterdir()) == ["case00.nii.gz", "case02.nii.gz"]
    assert_complete_outputs(out, ["case00", "case02"])
    del names


@pytest.mark.slow
def test_two_processes_share_an_output_folder(models, tmp_path):
    names = make_cases(tmp_path / "in", 6)
    out = tmp_path / "out"
    procs = [subprocess.Popen(CLI + ["-i", str(tmp_path / "in"), "-o", str(out), *models, "--threads", "1",
                                     "--disable_progress_bar", "--report", str(tmp_path / f"r{k}.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", env=env_with_threads())
             for k in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    reports = [json.loads((tmp_path / f"r{k}.json").read_text()) for k in range(2)]
    done = [[n for n, e in r["cases"].items() if e["status"] == "done"] for r in reports]
    assert sorted(done[0] + done[1]) == names  # every case predicted exactly once
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.nii.gz" for n in names] and tmp_files(out) == []
    assert_complete_outputs(out, names)


@pytest.mark.slow
def test_ctrl_c_keeps_finished_cases_and_a_rerun_completes(models, tmp_path):
    # enough cases that the interrupt lands mid-batch even on a fast, idle machine (a case takes well under 1 s)
    names = make_cases(tmp_path / "in", 30)
    out = tmp_path / "out"
    cmd = CLI + ["-i", str(tmp_path / "in"), "-o", str(out), *models, "--threads", "1", "--disable_progress_bar",
                 "--report", str(tmp_path / "r.json")]
    # a shell that runs the suite in the background (nohup, `&`) ignores SIGINT, and a child would inherit that;
    # a user at a terminal has the default disposition, so the command is started with it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                            env=env_with_threads(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and not (out.is_dir() and any(p.name.endswith(".nii.gz") and not p.name.startswith(".")
                                                                for p in out.iterdir())):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    finished = sorted(p.name[: -len(".nii.gz")] for p in out.iterdir() if not p.name.startswith("."))
    assert 1 <= len(finished) < len(names), "the interrupt must land in the middle of the batch"
    assert tmp_files(out) == []
    assert_complete_outputs(out, finished)
    before = {n: (out / f"{n}.nii.gz").stat().st_mtime_ns for n in finished}
    rerun = subprocess.run(cmd, capture_output=True, encoding="utf-8", timeout=300, env=env_with_threads())
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert sorted(n for n, e in report["cases"].items() if e["status"].startswith("skipped")) == finished
    assert {n: (out / f"{n}.nii.gz").stat().st_mtime_ns for n in finished} == before  # untouched
    assert_complete_outputs(out, names)
    assert tmp_files(out) == []


@pytest.mark.slow
def test_cli_batch_with_bad_cases_summarises_and_exits_nonzero(models, tmp_path):
    make_cases(tmp_path / "in", 2)
    (tmp_path / "in" / "empty_0000.nii.gz").write_bytes(b"")
    image = body_ct(shape_zyx=(24, 48, 48))
    image.SetSpacing((0.8, 0.8, 100.0))
    write(image, tmp_path / "in" / "thick_0000.nii.gz")
    proc = subprocess.run(CLI + ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *models, "--threads", "1",
                                 "--disable_progress_bar"], capture_output=True, encoding="utf-8", timeout=300,
                          env=env_with_threads())
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    failed = [ln for ln in proc.stderr.splitlines() if ln.strip().startswith("FAILED")]
    assert len(failed) == 2
    assert any("empty (0 bytes)" in ln for ln in failed)
    assert any("spacing (0.8, 0.8, 100) mm" in ln for ln in failed)
    assert "2 predicted" in proc.stdout
    assert np.all([p.name.startswith("case") for p in (tmp_path / "out").iterdir()])
