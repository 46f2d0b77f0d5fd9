"""The memory levers (docs/performance.md, "Memory"): chunked resizing, repairs
in place, labels restored a slab at a time. Each must leave every output bit as it was."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_flare.inference import geometry
from nnunetv2_flare.inference.geometry import Box
from nnunetv2_flare.inference.inputs.checks import prepare_input
from nnunetv2_flare.inference.inputs.orientation import orientation_matrix

ROOT = Path(__file__).resolve().parents[1]


def _whole_volume_resize(volume: np.ndarray, out_shape) -> np.ndarray:
    """The resize as it was before chunking (in plane for every slice, then axis 0 on the whole stack)."""
    planes = np.stack([geometry._in_plane(volume[z:z + 1], out_shape[1:])[0] for z in range(volume.shape[0])])
    return geometry._linear_axis(planes, out_shape[0], 0)


@pytest.mark.parametrize("n_in, n_out", [(1, 1), (1, 4), (5, 1), (37, 15), (15, 37), (33, 33), (17, 16), (3, 40)])
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_chunked_resize_is_bitwise_the_whole_volume_resize(n_in, n_out, chunk):
    volume = np.random.default_rng(n_in * 100 + n_out).integers(-1024, 3000, (n_in, 23, 19)).astype(np.int16)
    for out_shape in [(n_out, 11, 7), (n_out, 23, 19), (n_out, 30, 40)]:
        got = geometry.resize_linear(volume[:, ::-1], out_shape, chunk)  # a strided view, as the crop is
        expected = _whole_volume_resize(volume[:, ::-1], out_shape)
        assert got.dtype == np.float32 and np.array_equal(got.view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize("slab", [1, 3, 16])
def test_nearest_slabs_are_the_whole_nearest_resize(slab):
    labels = np.random.default_rng(slab).integers(0, 14, (9, 13, 7)).astype(np.uint8)
    for out_shape in [(9, 13, 7), (20, 5, 30), (4, 26, 3)]:
        got = np.full(out_shape, 255, np.uint8)
        for first, part in geometry.resize_nearest_slabs(labels, out_shape, slab):
            got[first:first + part.shape[0]] = part
        np.testing.assert_array_equal(got, geometry.resize_nearest(labels, out_shape))


def _ct_with_padding(direction: str = "LPS", dtype=np.int16) -> sitk.Image:
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1500, (37, 20, 24)).astype(dtype)
    array[:, :3] = -2048  # padding outside the scan circle
    if not np.issubdtype(dtype, np.integer):
        array[[2, 20, 36], 10, [4, 5, 6]] = [np.nan, np.inf, -np.inf]  # in three different slabs
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 2.5))
    image.SetOrigin((3.0, -7.0, 11.0))
    image.SetDirection(tuple(orientation_matrix(direction).ravel()))
    return image


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_repairs_in_place_change_only_what_may_change(dtype):
    """Padding below -1024 HU (and NaN in a float scan) repaired slab by slab: the caller's image is left as it was,
    unless the cascade read it itself (in_place), and the repaired voxels are the same either way."""
    image = _ct_with_padding(dtype=dtype)
    before = sitk.GetArrayFromImage(image)
    copied = prepare_input(image, "LPS")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), before)  # the caller's image untouched
    repaired = sitk.GetArrayFromImage(copied.image)
    expected = np.where(np.isfinite(before), before, before[np.isfinite(before)].min())
    expected = np.maximum(expected, -1024).astype(repaired.dtype)
    np.testing.assert_array_equal(repaired, expected)
    in_place = prepare_input(image, "LPS", in_place=True)
    assert in_place.image is image  # no copy: the same image, now repaired
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), repaired)


@pytest.mark.parametrize("stored", ["LPS", "RAS", "SLP", "IRA"])
def test_labels_pasted_slab_by_slab_land_on_the_input_grid(stored):
    """A box of labels in the processed orientation pasted in slabs equals the old full-size mapping back."""
    image = _ct_with_padding(stored)
    prepared = prepare_input(image, "LPS")
    canonical_shape = prepared.image.GetSize()[::-1]
    rng = np.random.default_rng(1)
    canonical = np.zeros(canonical_shape, np.uint8)
    box = Box((1, 2, 3), tuple(n - 1 for n in canonical_shape))
    canonical[box.slices] = rng.integers(0, 14, box.shape)
    labels = prepared.new_label_image()
    for z in range(box.start[0], box.stop[0], 4):
        slab = Box((z, *box.start[1:]), (min(z + 4, box.stop[0]), *box.stop[1:]))
        prepared.paste_labels(labels, slab, canonical[slab.slices].copy())
    assert labels.GetSize() == image.GetSize() and labels.GetPixelID() == sitk.sitkUInt8
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(labels, get)() == getattr(image, get)()
    turned = prepared.reorientation
    expected = canonical if turned.is_identity else turned.to_original(canonical)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(labels), expected)
    np.testing.assert_array_equal(prepared.canonical_labels(labels), canonical)


@pytest.mark.slow
def test_benchmark_huge_makes_its_work_folder(tmp_path):
    """tools/benchmark_huge.py on a thin scan (tiny networks, PyTorch) into a --work folder that does not exist."""
    work = tmp_path / "not" / "yet"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark_huge.py"), "--slices", "4", "--threads",
                           "1", "--backend", "torch", "--work", str(work)], capture_output=True, encoding="utf-8",
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert row["size_xyz"] == [512, 512, 4] and row["ok"] and row["backend"] == "torch"
    assert work.is_dir() and not any(work.iterdir())  # its temporary folder is gone again
