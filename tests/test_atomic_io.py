from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_flare.atomic_io import (
    atomic_path,
    remove_stale_temporaries,
    temporary_sibling,
    write_image_atomic,
    write_json_atomic,
)


def test_temporary_keeps_the_extension(tmp_path):
    assert temporary_sibling(tmp_path / "case.nii.gz").name.endswith("-case.nii.gz")


def test_image_and_json_land_whole(tmp_path):
    img = sitk.GetImageFromArray(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    write_image_atomic(img, tmp_path / "a.nii.gz")
    write_json_atomic({"x": 1}, tmp_path / "r.json")
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.nii.gz"))).sum() == np.arange(24).sum()
    assert json.loads((tmp_path / "r.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "r.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_stale_temporaries_are_removed(tmp_path):
    stale = temporary_sibling(tmp_path / "x.nii.gz")
    stale.write_text("junk")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists()
