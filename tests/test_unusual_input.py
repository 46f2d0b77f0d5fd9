"""Defined behaviour for unusual input, through the Python API the CLI uses: every case is either a
correct result (with a warning where the user should know) or a refusal with a one-line reason, and a batch goes on.
Networks are deterministic array functions (unusual_inputs.py) or label oracles, so each run takes milliseconds."""
from __future__ import annotations

import gzip
import itertools
import json
import math
import struct

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from cascade_oracles import LabelOracle, dice, predictor_from_networks, real_data, tie_tolerant_ideal
from nnunetv2_flare.inference.inputs.checks import InputRefused, prepare_input
from nnunetv2_flare.inference.inputs.orientation import plan_reorientation
from unusual_inputs import (
    NORM,
    array_predictor,
    body_ct,
    same_geometry,
    tmp_files,
    with_array,
    write,
    write_dicom_series,
)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)


def labels(result) -> np.ndarray:
    return sitk.GetArrayFromImage(result.labels)


def refused(image: sitk.Image, match: str) -> str:
    with pytest.raises(InputRefused, match=match) as info:
        array_predictor().run(image)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    return message


def run_batch(paths, out, **options):
    result = array_predictor(**options).predict_files(paths, out, report=out.parent / "report.json")
    return result, json.loads((out.parent / "report.json").read_text())


# ------------------------------------------------------------------------------------------------ files
def test_bad_files_fail_alone_with_one_line_reasons(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = write(body_ct(), folder / "good_0000.nii.gz")
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "garbage.mha").write_bytes(b"definitely not an image\n" * 3)
    data = good.read_bytes()
    (folder / "truncgz.nii.gz").write_bytes(data[: len(data) // 2])
    raw = write(body_ct(seed=1), tmp_path / "raw.nii").read_bytes()
    (folder / "truncraw.nii").write_bytes(raw[: len(raw) * 2 // 3])
    write_dicom_series(folder / "twoseries", "1.2.3.4.1", 3, "a")
    write_dicom_series(folder / "twoseries", "1.2.3.4.2", 4, "b")
    out = tmp_path / "out"
    result, report = run_batch([folder], out)
    assert result.done == ["good"]
    reasons = report["failed"]
    assert set(reasons) == {"empty", "garbage", "truncgz", "truncraw", "twoseries"}
    assert "empty (0 bytes)" in reasons["empty"]
    assert "not a readable image" in reasons["garbage"]
    assert "truncated" in reasons["truncgz"] and "truncated" in reasons["truncraw"]
    assert "2 DICOM series (1.2.3.4.1, 1.2.3.4.2)" in reasons["twoseries"]
    assert all("\n" not in r for r in reasons.values())
    assert all(report["cases"][c]["kind"] == "refused" for c in reasons)
    assert sorted(p.name for p in out.iterdir()) == ["good.nii.gz"]  # nothing else, no temporaries


def test_intact_compressed_nifti_is_not_mistaken_for_truncated(tmp_path):
    path = write(body_ct(shape_zyx=(7, 33, 35)), tmp_path / "odd_0000.nii.gz")
    with gzip.open(path) as f:
        assert len(f.read()) > 0
    assert array_predictor().run(path).labels.GetSize() == (35, 33, 7)


# ------------------------------------------------------------------------------------------------ layout
def test_2d_4d_and_multichannel(tmp_path):
    slice_2d = sitk.GetImageFromArray(sitk.GetArrayFromImage(body_ct())[5])
    refused(slice_2d, "a 2D image")
    four = sitk.JoinSeries([body_ct(), body_ct(seed=1)])
    refused(four, "4D image with 2 volumes")
    rgb = sitk.Compose([body_ct()] * 3)
    refused(rgb, "3 values per voxel")
    # a 4D file with one volume (common from converters) is read as 3D, same result as the 3D image
    one = sitk.JoinSeries([body_ct()])
    assert one.GetDimension() == 4
    expected = labels(array_predictor().run(body_ct()))
    result = array_predictor().run(one)
    assert any("4D image with a single volume" in n for n in result.notes)
    np.testing.assert_array_equal(labels(result), expected)
    path = write(one, tmp_path / "single4d.nii.gz")
    np.testing.assert_array_equal(labels(array_predictor().run(path)), expected)


# ------------------------------------------------------------------------------------------------ intensities
def test_few_nan_inf_replaced_with_warning_many_refused():
    image = body_ct(dtype=np.float32)
    a = sitk.GetArrayFromImage(image)
    broken = a.copy()
    broken[3, 0, :5] = np.nan
    broken[4, 1, :3] = np.inf
    broken[4, 2, :3] = -np.inf
    result = array_predictor().run(with_array(image, broken))
    assert any("11 NaN / infinite voxels" in w for w in result.warnings)
    repaired = a.copy()
    repaired[~np.isfinite(broken)] = a.min()
    np.testing.assert_array_equal(labels(result), labels(array_predictor().run(with_array(image, repaired))))
    many = a.copy()
    many[:2] = np.nan  # 10 %
    refused(with_array(image, many), r"10\.0% of the voxels are NaN or infinite")


def test_constant_and_non_ct_ranges_refused_small_positive_range_warned():
    image = body_ct(dtype=np.float32)
    a = sitk.GetArrayFromImage(image)
    refused(with_array(image, np.full_like(a, -1000)), "constant image")
    refused(with_array(image, (a + 1000) / 1500), "normalized image")
    refused(with_array(image, np.clip(a + 1024, 0, 4095).astype(np.uint16)),
            r"values range \d+\.\.\d+ with nothing negative")
    mr = np.where(a > -500, 300 + 2.5 * (a + 200), 0).astype(np.float32)  # dark background, bright tissue
    refused(with_array(image, mr), "an MR or a CT without its rescale")
    no_air = np.clip(a, -150, None)  # a CT cropped inside the body, or a non-CT with small values
    result = array_predictor().run(with_array(image, no_air))
    assert any(w.startswith("No air in the image") for w in result.warnings)


@pytest.mark.parametrize("pad", [-2048.0, -3024.0])
def test_padding_outside_scan_circle_gives_the_same_result_as_air(pad):
    reference = array_predictor().run(body_ct(padding=-1024.0))
    padded = array_predictor().run(body_ct(padding=pad))
    np.testing.assert_array_equal(labels(padded), labels(reference))
    assert any("set to -1024 HU (air)" in n for n in padded.notes)
    # the clamp matters: without it the same scan gives other labels
    raw_image = body_ct(padding=pad)
    x = prepare_input(raw_image)
    assert sitk.GetArrayViewFromImage(x.image).min() == -1024


@pytest.mark.real_data
def test_real_ct_with_minus_2048_padding_matches_clipped_copy():
    path = real_data("tcga-ov/TCGA-09-2043_CEAxial3.0WITH_CE_z056-159.nii.gz")
    image = sitk.ReadImage(str(path))[::6, ::6, ::3]  # keep the test fast; the padding is still there
    assert sitk.GetArrayViewFromImage(image).min() == -2048
    clipped = sitk.Clamp(image, lowerBound=-1024)
    big = dict(organ_patch_size=(32, 64, 64))
    np.testing.assert_array_equal(labels(array_predictor(**big).run(image)),
                                  labels(array_predictor(**big).run(clipped)))


def test_integer_and_double_dtypes_give_the_int16_result():
    image = body_ct()
    expected = labels(array_predictor().run(image))
    for pixel in (sitk.sitkInt32, sitk.sitkInt64, sitk.sitkFloat32, sitk.sitkFloat64):
        np.testing.assert_array_equal(labels(array_predictor().run(sitk.Cast(image, pixel))), expected)


# ------------------------------------------------------------------------------------------------ spacing
def nifti_with_pixdim(tmp_path, name, pixdim_xyz):
    path = write(body_ct(), tmp_path / f"{name}.nii")
    raw = bytearray(path.read_bytes())
    raw[80:92] = struct.pack("<3f", *pixdim_xyz)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("pixdim, shown", [((0, 0, 0), "(0, 0, 0)"), ((-1.6, 1.4, 3.0), "(-1.6, 1.4, 3)"),
                                           ((1e-6, 1e-6, 1e-6), "(1e-06, 1e-06, 1e-06)"),
                                           ((100, 100, 100), "(100, 100, 100)")])
def test_broken_spacing_in_file_headers_is_refused_with_the_spacing(tmp_path, pixdim, shown):
    path = nifti_with_pixdim(tmp_path, "bad", pixdim)
    with pytest.raises(InputRefused) as info:
        array_predictor().run(path)
    assert shown in str(info.value) and "spacing" in str(info.value)


@pytest.mark.parametrize("spacing", [(1e-6, 1.0, 1.0), (0.8, 0.8, 100.0), (0.01, 0.01, 0.01)])
def test_absurd_spacing_refused(spacing):
    image = body_ct()
    image.SetSpacing(spacing)
    message = refused(image, "outside 0.05..20 mm")
    assert "(x, y, z)" in message


def test_strongly_anisotropic_spacing_works_with_warning():
    image = body_ct(shape_zyx=(6, 40, 48), spacing_xyz=(0.7, 0.7, 10.0))
    result = array_predictor().run(image)
    assert any("anisotropic" in w for w in result.warnings)
    assert same_geometry(result.labels, image) and labels(result).any()


# ------------------------------------------------------------------------------------------------ orientation
def signed_permutation_variant(image: sitk.Image, perm, flips) -> tuple[sitk.Image, callable]:
    """The same physical scan stored with index axes permuted (new x = old perm[0], ...) and reversed; returns it
    and a function mapping a label array of the variant back to the original's voxel layout."""
    a = sitk.GetArrayFromImage(image)
    axes = tuple(2 - perm[2 - k] for k in range(3))  # array order
    flipped = tuple(k for k in range(3) if flips[2 - k])
    b = np.flip(np.transpose(a, axes), flipped)
    out = sitk.GetImageFromArray(np.ascontiguousarray(b))
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    size, spacing = image.GetSize(), image.GetSpacing()
    out.SetSpacing([spacing[perm[j]] for j in range(3)])
    out.SetDirection(np.stack([(-1 if flips[j] else 1) * d[:, perm[j]] for j in range(3)], 1).ravel())
    first = [0, 0, 0]
    for j in range(3):
        first[perm[j]] = size[perm[j]] - 1 if flips[j] else 0
    out.SetOrigin(image.TransformIndexToPhysicalPoint(first))
    return out, lambda lab: np.transpose(np.flip(lab, flipped), np.argsort(axes))


VARIANTS = [((0, 1, 2), f) for f in itertools.product([0, 1], repeat=3) if any(f)] + \
           [((1, 0, 2), (0, 0, 0)), ((2, 0, 1), (1, 0, 1)), ((1, 2, 0), (0, 1, 1))]


def test_flipped_and_permuted_storage_gives_the_same_labels_voxel_for_voxel():
    original = body_ct(shape_zyx=(18, 36, 44), spacing_xyz=(1.3, 1.5, 2.5))
    expected = labels(array_predictor().run(original))
    differs_without_reorientation = 0
    for perm, flips in VARIANTS:
        variant, back = signed_permutation_variant(original, perm, flips)
        # the variant is the same physical scan
        probe = (5, 7, 3)
        point = original.TransformIndexToPhysicalPoint(probe)
        assert variant[variant.TransformPhysicalPointToIndex(point)] == original[probe]
        result = array_predictor().run(variant)
        assert same_geometry(result.labels, variant)
        np.testing.assert_array_equal(back(labels(result)), expected, err_msg=f"perm {perm} flips {flips}")
        as_read = array_predictor(orientation=None).run(variant)
        differs_without_reorientation += not np.array_equal(back(labels(as_read)), expected)
    assert differs_without_reorientation >= len(VARIANTS) - 1  # the test can fail: the networks see voxel order


def rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = math.cos(ax), math.sin(ax), math.cos(az), math.sin(az)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


@pytest.mark.parametrize("base_perm, base_flips", [((0, 1, 2), (0, 0, 0)), ((1, 0, 2), (1, 0, 1))])
def test_oblique_scan_processed_in_nearest_orientation_with_warning(base_perm, base_flips):
    original = body_ct(shape_zyx=(18, 36, 44), spacing_xyz=(1.3, 1.5, 2.5))
    expected = labels(array_predictor().run(original))
    variant, back = signed_permutation_variant(original, base_perm, base_flips)
    tilted = sitk.Image(variant)
    d = rotation(math.radians(12), math.radians(-9)) @ np.asarray(variant.GetDirection()).reshape(3, 3)
    tilted.SetDirection(d.ravel())
    result = array_predictor().run(tilted)
    assert any(w.startswith("Oblique scan") for w in result.warnings)
    assert same_geometry(result.labels, tilted)
    np.testing.assert_array_equal(back(labels(result)), expected)


def test_report_says_orientation_and_crop_box_in_input_indices(tmp_path):
    original = body_ct()
    variant, _ = signed_permutation_variant(original, (2, 0, 1), (1, 0, 1))
    write(variant, tmp_path / "v_0000.nii.gz")
    _, report = run_batch([tmp_path / "v_0000.nii.gz"], tmp_path / "out")
    entry = report["cases"]["v"]
    assert entry["input_orientation"] == plan_reorientation(variant).source_code != "LPS"
    assert entry["processed_orientation"] == "LPS"
    box = entry["crop_box"]
    assert all(0 <= a < b <= n for a, b, n in zip(box["start_xyz"], box["stop_xyz"], variant.GetSize()))


# ------------------------------------------------------------------------------------------------ field of view
def oracle_predictor(reference: sitk.Image, locator_reference: sitk.Image | None = None, **options):
    kwargs = dict(locator_size=(32, 32, 32), organ_patch_size=(32, 32, 32), organ_spacing=(4.0, 3.0, 3.0),
                  margin_mm=6.0, progress=False, min_component_side=4)
    kwargs.update(options)
    return predictor_from_networks(LabelOracle(locator_reference or reference, binary=True),
                                   LabelOracle(reference), NORM, NORM, **kwargs)


def check_matches_ideal(result, reference: sitk.Image, min_dice: float = 0.98) -> None:
    out = labels(result)
    spacing_xyz = result.organ_spacing_input_zyx[::-1]
    box = result.crop_box
    ideal = tie_tolerant_ideal(out, reference, box.start[::-1], box.stop[::-1], spacing_xyz)
    for organ in np.unique(ideal[ideal > 0]):
        assert dice(out == organ, ideal == organ) >= min_dice, f"organ {organ}"
    assert not (out[ideal == 0] > 0).mean() > 0.01


@pytest.mark.real_data
@pytest.mark.parametrize("z_range, expect_found", [((82, 112), True),   # upper abdomen only (example_ct_sm)
                                                    ((0, 30), False),    # pelvis only: no FLARE organ
                                                    ((60, 112), True)])  # organs cut by the top border
def test_partial_fields_of_view_on_real_ct(z_range, expect_found):
    image = sitk.ReadImage(str(real_data("totalsegmentator/example_ct.nii.gz")))
    reference = sitk.ReadImage(str(real_data("totalsegmentator/example_seg_fast_force_split_flare13.nii.gz")))
    image, reference = image[:, :, z_range[0]:z_range[1]], reference[:, :, z_range[0]:z_range[1]]
    result = oracle_predictor(reference).run(image)
    assert same_geometry(result.labels, image)
    assert result.crop_from_locator == expect_found
    if not expect_found:
        assert any("found no abdomen" in w for w in result.warnings)
        assert not labels(result).any()
    else:
        check_matches_ideal(result, reference)
        ref = sitk.GetArrayViewFromImage(reference)
        if z_range[1] == 112:
            assert (ref[-1] == 1).any() and (labels(result)[-1] == 1).any()  # the liver touches the border


def test_chest_only_scan_warns_and_segments_whole_volume():
    image = body_ct(shape_zyx=(16, 40, 40))
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    result = oracle_predictor(empty).run(image)
    assert not result.crop_from_locator and any("found no abdomen" in w for w in result.warnings)
    assert result.crop_box.shape == sitk.GetArrayViewFromImage(image).shape and not labels(result).any()


@pytest.mark.parametrize("n_slices, in_plane", [(1, 64), (2, 64), (5, 64), (3, 128)])
def test_thin_scans_and_small_in_plane_sizes(n_slices, in_plane):
    full = body_ct(shape_zyx=(n_slices, in_plane, in_plane), spacing_xyz=(0.8, 0.8, 5.0))
    a = sitk.GetArrayFromImage(full)
    ref = np.zeros(a.shape, np.uint8)
    ref[a > 60] = 1  # 'liver': the dense blobs
    ref[a > 300] = 5
    reference = with_array(full, ref)
    result = oracle_predictor(reference, organ_patch_size=(32, 32, 32), organ_spacing=(2.0, 1.5, 1.5)).run(full)
    assert same_geometry(result.labels, full) and labels(result).dtype == np.uint8
    assert result.crop_from_locator  # the 20^3 rule is capped at the scan's thickness
    check_matches_ideal(result, reference, min_dice=0.95)
    # and the array networks (the real path: pad to the patch, tile, crop back) write a label there too
    assert array_predictor(organ_patch_size=(16, 32, 32)).run(full).labels.GetSize() == full.GetSize()


# ------------------------------------------------------------------------------------------------ fuzz
directions = st.builds(
    lambda perm, flips, ax, az: (perm, flips, ax, az),
    st.permutations([0, 1, 2]), st.tuples(*[st.booleans()] * 3),
    st.sampled_from([0.0, 0.0, 0.2, -0.7]), st.sampled_from([0.0, 0.1, 1.3]))
spacings = st.tuples(*[st.sampled_from([0.0, -1.0, 1e-6, 0.03, 0.3, 0.78, 2.5, 7.0, 19.9, 25.0, 100.0,
                                        float("nan")])] * 3)


@settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(st.integers(1, 6), st.integers(3, 14), st.integers(3, 14)), spacing=spacings,
       origin=st.tuples(*[st.sampled_from([0.0, -512.3, 1e4, float("inf")])] * 3), direction=directions,
       dtype=st.sampled_from(["uint8", "int16", "uint16", "int32", "float32", "float64"]),
       content=st.sampled_from(["ct", "noise", "constant", "nan"]), ending=st.sampled_from([".nii", ".nii.gz", ".mha"]))
def test_fuzz_headers_never_crash_and_never_change_geometry(tmp_path_factory, shape, spacing, origin, direction,
                                                            dtype, content, ending):
    folder = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    if content == "ct":
        a = sitk.GetArrayFromImage(body_ct(shape_zyx=shape)).astype(np.float64)
    elif content == "noise":
        a = rng.normal(0, 500, shape)
    elif content == "constant":
        a = np.full(shape, 7.0)
    else:
        a = sitk.GetArrayFromImage(body_ct(shape_zyx=shape)).astype(np.float64)
        a.flat[:: max(1, a.size // 3)] = np.nan
    info = np.iinfo(dtype) if dtype.startswith(("u", "i")) else None
    a = np.clip(np.nan_to_num(a, nan=0.0), info.min, info.max).astype(dtype) if info else a.astype(dtype)
    image = sitk.GetImageFromArray(a)
    perm, flips, ax, az = direction
    d = np.zeros((3, 3))
    for j in range(3):
        d[perm[j], j] = -1.0 if flips[j] else 1.0
    image.SetDirection((rotation(ax, az) @ d).ravel())
    try:
        image.SetOrigin(origin)
    except RuntimeError:
        pass
    valid_spacing = tuple(s if (s > 0 and math.isfinite(s)) else 1.0 for s in spacing)
    image.SetSpacing(valid_spacing)
    path = folder / f"case_0000{ending}"
    sitk.WriteImage(image, str(path))
    if ending != ".mha" and valid_spacing != spacing:  # put the broken spacing into the file itself
        raw = bytearray(path.read_bytes()) if ending == ".nii" else bytearray(gzip.decompress(path.read_bytes()))
        raw[80:92] = struct.pack("<3f", *spacing)
        path.write_bytes(bytes(raw) if ending == ".nii" else gzip.compress(bytes(raw)))
    out = folder / "out"
    result = array_predictor().predict_files([path], out)  # exceptions escaping here are crashes
    if result.done:
        written = sitk.ReadImage(str(out / "case.nii.gz"))
        stored = sitk.ReadImage(str(path))
        assert same_geometry(written, stored, atol=1e-3)
        assert written.GetPixelID() == sitk.sitkUInt8
    else:
        message = result.failed["case"]
        assert "\n" not in message
        assert result.report["cases"]["case"]["kind"] == "refused", message
        assert sorted(p.name for p in out.iterdir()) == []
    assert tmp_files(out) == []
