"""Every command refuses misuse the same way: exit 2, exactly one line on stderr naming the fix, no
traceback, nothing written. `-h` of every console script prints help and exits 0.

The table runs as subprocesses (the console scripts exactly as installed) for `-h` of every command and a few
representative misuses, several at a time; the other misuses call the commands' main(argv) in-process, which is
the same code path without the ~3 s interpreter start-up per row.
"""
from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import tomllib

from nnunetv2_flare.labels import dataset_json_labels

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


# ------------------------------------------------------------------------------------------------ fixtures on disk
def tiny_ct(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((6, 8, 8), -1000, dtype=np.int16)
    array[2:4, 2:6, 2:6] = 40
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def raw_dataset(root: Path, dataset_id: int, channel: str = "CT", labels: dict | None = None) -> Path:
    """Just a dataset.json: the planner's checks must refuse before any image is read."""
    folder = root / "raw" / f"Dataset{dataset_id:03d}_Test"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": channel}, "labels": labels or dataset_json_labels(), "numTraining": 1,
        "file_ending": ".nii.gz"}))
    (root / "preprocessed").mkdir()
    return folder


def nnunet_env(root: Path) -> dict[str, str]:
    return {name: str(root / name.split("_")[1]) for name in NNUNET_VARIABLES}


def tree(*folders: Path) -> set[str]:
    return {str(p) for folder in folders for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------------ the table
@dataclass
class Row:
    """One misuse: `setup(tmp)` writes what the row needs and returns argv; `env` is applied on top of a copy of
    the environment without nnU-Net's variables (None values remove a variable)."""
    id: str
    command: str
    setup: Callable[[Path], list[str]]
    code: int = 2
    expect: str = ""  # a part of the one stderr line
    env: Callable[[Path], dict[str, str]] = field(default=lambda tmp: {})
    subprocess: bool = False


def _predict_same_folder(tmp: Path) -> list[str]:
    tiny_ct(tmp / "in" / "a_0000.nii.gz")
    return ["-i", str(tmp / "in"), "-o", str(tmp / "in"), "-m1", "loc", "-m2", "org"]


def _predict_second_channel(tmp: Path) -> list[str]:
    tiny_ct(tmp / "in" / "a_0000.nii.gz")
    tiny_ct(tmp / "in" / "a_0001.nii.gz")
    return ["-i", str(tmp / "in"), "-o", str(tmp / "out"), "-m1", "loc", "-m2", "org"]


def _predict_report_under_a_file(tmp: Path) -> list[str]:
    tiny_ct(tmp / "in" / "a_0000.nii.gz")
    (tmp / "afile").write_text("x")
    return ["-i", str(tmp / "in"), "-o", str(tmp / "out"), "-m1", "loc", "-m2", "org", "--report",
            str(tmp / "afile" / "newdir" / "r.json")]


def _predict_report_is_the_input(tmp: Path) -> list[str]:
    ct = tiny_ct(tmp / "in" / "a_0000.nii.gz")
    return ["-i", str(ct), "-o", str(tmp / "out"), "-m1", "loc", "-m2", "org", "--report", str(ct)]


def _predict_output(name: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        return ["-i", str(tiny_ct(tmp / "in" / "a_0000.nii.gz")), "-o", str(tmp / name), "-m1", "loc", "-m2", "org"]
    return setup


def _evaluate_into_the_references(tmp: Path) -> list[str]:
    for folder in ("ref", "pred"):
        labels = sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8))
        (tmp / folder).mkdir()
        sitk.WriteImage(labels, str(tmp / folder / "a.nii.gz"))
    return ["-ref", str(tmp / "ref"), "-pred", str(tmp / "pred"), "-o", str(tmp / "ref" / "a.nii.gz")]


def _plan(dataset_id: int = 301, **kwargs) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        raw_dataset(tmp, 301, **kwargs)
        return ["-d", str(dataset_id), "-np", "1"]
    return setup


def _demo_output_is_a_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return ["-o", str(tmp / "afile")]


def _flare24_without_raw(tmp: Path) -> list[str]:
    tiny_ct(tmp / "release" / "train_gt_label" / "imagesTr" / "a_0000.nii.gz")
    tiny_ct(tmp / "release" / "train_gt_label" / "labelsTr" / "a.nii.gz")
    return ["-i", str(tmp / "release"), "-d", "220"]


NOT_FLARE = {"background": 0, "liver": 1, "tumour": 2}
ROWS = [
    Row("plan_without_nnUNet_raw", "nnUNetv2_flare_plan_and_preprocess", lambda tmp: ["-d", "220"],
        expect="nnUNet_raw", subprocess=True),
    Row("plan_wrong_id", "nnUNetv2_flare_plan_and_preprocess", _plan(999), expect="no dataset with id 999",
        env=nnunet_env),
    Row("plan_mr_dataset", "nnUNetv2_flare_plan_and_preprocess", _plan(channel="T2"), expect="one CT channel",
        env=nnunet_env),
    Row("plan_not_flare_labels", "nnUNetv2_flare_plan_and_preprocess", _plan(labels=NOT_FLARE),
        expect="not FLARE's 13 organs", env=nnunet_env),
    Row("plan_np_0", "nnUNetv2_flare_plan_and_preprocess", lambda tmp: ["-d", "301", "-np", "0"],
        expect="-np must be at least 1", env=nnunet_env),
    Row("pseudolabel_id_999", "nnUNetv2_flare_pseudolabel", lambda tmp: ["-d", "999", "--rounds"],
        expect="no dataset with id 999", env=nnunet_env, subprocess=True),
    Row("predict_d_abc", "nnUNetv2_flare_predict", lambda tmp: ["-i", str(tmp), "-o", str(tmp / "o"), "-d", "abc"],
        expect="invalid dataset 'abc'", subprocess=True),
    Row("predict_o_is_i", "nnUNetv2_flare_predict", _predict_same_folder, expect="is the input folder itself"),
    Row("predict_second_channel", "nnUNetv2_flare_predict", _predict_second_channel,
        expect="the FLARE models take one channel"),
    Row("predict_report_under_a_file", "nnUNetv2_flare_predict", _predict_report_under_a_file,
        expect="is a file"),
    Row("predict_report_is_the_input", "nnUNetv2_flare_predict", _predict_report_is_the_input,
        expect="is an input of this run"),
    Row("predict_o_two_file_format", "nnUNetv2_flare_predict", _predict_output("seg.mhd"),
        expect="keeps its voxels in a second file"),
    Row("predict_o_not_a_label_format", "nnUNetv2_flare_predict", _predict_output("seg.txt"),
        expect="not a label file format"),
    Row("predict_window_voxels_half", "nnUNetv2_flare_predict",
        lambda tmp: ["-i", "x", "-o", "y", "--window_voxels", "1.5"], expect="invalid voxel count '1.5'"),
    Row("predict_unknown_option", "nnUNetv2_flare_predict", lambda tmp: ["-i", "x", "-o", "y", "--nonsense"],
        expect="unrecognized arguments"),
    Row("evaluate_missing_folder", "nnUNetv2_flare_evaluate",
        lambda tmp: ["-ref", str(tmp / "ref"), "-pred", str(tmp / "pred")], expect="does not exist"),
    Row("evaluate_bad_label", "nnUNetv2_flare_evaluate",
        lambda tmp: ["-ref", str(tmp), "-pred", str(tmp), "-l", "14"], expect="not FLARE organ ids"),
    Row("evaluate_summary_over_a_reference", "nnUNetv2_flare_evaluate", _evaluate_into_the_references,
        expect="is a label file of the folders being scored"),
    Row("phantoms_n_0", "nnUNetv2_flare_make_phantoms", lambda tmp: ["-d", "1", "-n", "0", "-o", str(tmp / "o")],
        expect="-n must be at least 1"),
    Row("phantoms_shape_0", "nnUNetv2_flare_make_phantoms",
        lambda tmp: ["-d", "1", "-n", "1", "--shape", "0", "-o", str(tmp / "o")], expect="a factor in [0.05, 1]"),
    Row("phantoms_shape_0.04", "nnUNetv2_flare_make_phantoms",
        lambda tmp: ["-d", "1", "-n", "1", "--shape", "0.04", "-o", str(tmp / "o")], expect="got '0.04'"),
    Row("phantoms_shape_1e-9", "nnUNetv2_flare_make_phantoms",
        lambda tmp: ["-d", "1", "-n", "1", "--shape", "1e-9", "-o", str(tmp / "o")], expect="got '1e-9'"),
    Row("smoke_threads_0", "nnUNetv2_flare_smoke", lambda tmp: ["--threads", "0"], expect="--threads"),
    Row("ext_trainer_path_argument", "nnUNetv2_flare_ext_trainer_path", lambda tmp: ["extra"],
        expect="unrecognized arguments"),
    Row("demo_output_is_a_file", "nnUNetv2_flare_demo", _demo_output_is_a_file, expect="is a file",
        subprocess=True),
    Row("demo_one_minute", "nnUNetv2_flare_demo", lambda tmp: ["--minutes", "1", "-o", str(tmp / "demo")],
        expect="--minutes 1"),
    Row("convert_not_a_release", "nnUNetv2_flare_convert", lambda tmp: ["-i", str(tmp), "-d", "220", "-o",
                                                                         str(tmp / "raw")],
        expect="matches none of FLARE's release layouts", subprocess=True),
    Row("convert_without_nnUNet_raw", "nnUNetv2_flare_convert", _flare24_without_raw, expect="nnUNet_raw is not set"),
]


def _entry_point(command: str) -> Callable:
    module, function = SCRIPTS[command].split(":")
    return getattr(__import__(module, fromlist=[function]), function)


def _environment(row: Row, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NNUNET_VARIABLES}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.update(row.env(tmp))
    return env


def _run_subprocess(command: str, argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    done = subprocess.run([command, *argv], env=env, cwd=cwd, capture_output=True, encoding="utf-8", timeout=120)
    return done.returncode, done.stdout, done.stderr


def _prepare(row: Row, base: Path) -> tuple[Path, list[str], set[str]]:
    tmp = base / row.id
    tmp.mkdir()
    argv = row.setup(tmp)
    return tmp, argv, tree(tmp)


@pytest.fixture(scope="module")
def subprocess_runs(tmp_path_factory) -> dict[str, tuple]:
    """Every subprocess of the table (misuse rows and `-h` of each command), three at a time."""
    base = tmp_path_factory.mktemp("commands")
    jobs: dict[str, tuple] = {}
    for row in ROWS:
        if row.subprocess:
            tmp, argv, before = _prepare(row, base)
            jobs[row.id] = (row.command, argv, _environment(row, tmp), tmp, before)
    for command in SCRIPTS:
        tmp = base / f"help_{command}"
        tmp.mkdir()
        jobs[f"help_{command}"] = (command, ["-h"], _environment(Row("h", command, lambda t: []), tmp), tmp, set())
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(_run_subprocess, c, a, e, t) for key, (c, a, e, t, _) in jobs.items()}
        return {key: (*futures[key].result(), jobs[key][3], jobs[key][4]) for key in jobs}


def _check_refusal(row: Row, code: int, err: str, tmp: Path, before: set[str]) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{row.command}: ") and row.expect in lines[0], lines[0]
    assert tree(tmp) == before, "the refused command left files or folders behind"
    assert code == row.code, (code, err)


@pytest.mark.parametrize("row", [r for r in ROWS if r.subprocess], ids=lambda r: r.id)
def test_misuse_as_a_subprocess(row: Row, subprocess_runs):
    code, _, err, tmp, before = subprocess_runs[row.id]
    _check_refusal(row, code, err, tmp, before)


@pytest.mark.parametrize("row", [r for r in ROWS if not r.subprocess], ids=lambda r: r.id)
def test_misuse_in_process(row: Row, tmp_path, monkeypatch, capsys):
    tmp, argv, before = _prepare(row, tmp_path)
    for name in NNUNET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in row.env(tmp).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp)  # a command that wrote into the working folder would show in the tree
    try:
        code = _entry_point(row.command)(argv)
    except SystemExit as e:  # argparse's errors
        code = e.code
    _check_refusal(row, code, capsys.readouterr().err, tmp, before)


@pytest.mark.parametrize("command", sorted(SCRIPTS))
def test_help_of_every_command(command, subprocess_runs):
    code, out, err, tmp, _ = subprocess_runs[f"help_{command}"]
    assert code == 0 and "Traceback" not in err, err
    assert out.startswith("usage:") and command in out.split("\n")[0], out[:200]  # help, not the trainer path
    assert tree(tmp) == set()


def test_every_console_script_is_in_the_table():
    assert {row.command for row in ROWS} == set(SCRIPTS)


# ------------------------------------------------------------------------------------------------ shared exit path
def test_run_command_exit_codes(capsys):
    from nnunetv2_flare.cli_errors import UsageError, run_command

    def refuse():
        raise UsageError("bad\nthing;   do this")

    def interrupt():
        raise KeyboardInterrupt
    assert run_command("cmd", refuse) == 2
    assert capsys.readouterr().err == "cmd: bad thing; do this\n"
    assert run_command("cmd", interrupt, interrupted=lambda: "stopped") == 130
    assert capsys.readouterr().err == "cmd: stopped\n"
    assert run_command("cmd", lambda: 1) == 1 and run_command("cmd", lambda: None) == 0
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_command("cmd", lambda: 1 / 0)


def test_api_refuses_an_unsupported_object_in_one_line():
    from unusual_inputs import array_predictor
    with pytest.raises(TypeError) as info:
        array_predictor().predict([[1, 2], [3, 4]])
    assert "\n" not in str(info.value) and "NumPy array" in str(info.value)


def test_evaluate_shows_no_progress_bar_off_a_terminal(tmp_path, capsys):
    from nnunetv2_flare.evaluation.cli import main
    labels = np.zeros((6, 8, 8), dtype=np.uint8)
    labels[2:4, 2:6, 2:6] = 1
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / folder / "a.nii.gz"))
    assert main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred")]) == 0
    assert capsys.readouterr().err == ""  # tqdm's frames in a log would read as two bars
