"""Building blocks of the cascade: resizing, tiling, component filters, input listing, model loading."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from cascade_oracles import dice, real_data
from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, geometry
from nnunetv2_flare.inference.core.postprocessing import keep_largest_component_per_label, remove_small_components
from nnunetv2_flare.inference.core.sliding_window import owned_ranges, tile_starts
from nnunetv2_flare.inference.geometry import resize_labels_linear_slabs, resize_linear, resize_nearest
from nnunetv2_flare.inference.inputs.reading import case_name, list_cases
from nnunetv2_flare.inference.models.backends import argmax_labels
from nnunetv2_flare.inference.models.backends.torch import NetworkModel
from nnunetv2_flare.inference.models.loading import CTNormalization, load_phase
from nnunetv2_flare.masks import foreground_box, margin_voxels
from tool_modules import load_tool

write_random_model_folder = load_tool("random_models").write_random_model_folder


@settings(max_examples=30, deadline=None)
@given(st.tuples(*[st.integers(2, 17)] * 3), st.tuples(*[st.integers(1, 23)] * 3))
def test_resize_linear_equals_torch_trilinear(shape, out_shape):
    a = np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16)
    expected = F.interpolate(torch.from_numpy(a.astype(np.float32))[None, None], size=out_shape, mode="trilinear",
                             align_corners=False)[0, 0]
    got = geometry.resize_linear(a, out_shape)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-2, rtol=1e-4)  # HU up to 1000


@settings(max_examples=30, deadline=None)
@given(st.tuples(*[st.integers(1, 17)] * 3), st.tuples(*[st.integers(1, 23)] * 3))
def test_resize_nearest_equals_torch_nearest_exact(shape, out_shape):
    a = np.random.default_rng(1).integers(0, 14, shape).astype(np.uint8)
    expected = F.interpolate(torch.from_numpy(a.astype(np.float32))[None, None], size=out_shape,
                             mode="nearest-exact")[0, 0].numpy().astype(np.uint8)
    # exact ties (an output centre on an input voxel border) may go either way: compare everywhere else
    ties = [np.abs(((np.arange(m) + 0.5) * n / m) % 1) < 1e-9 for n, m in zip(shape, out_shape)]
    clear = ~(ties[0][:, None, None] | ties[1][None, :, None] | ties[2][None, None, :])
    np.testing.assert_array_equal(geometry.resize_nearest(a, out_shape)[clear], expected[clear])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 400), st.integers(8, 96), st.sampled_from([0.0, 0.05, 0.5]))
def test_tiles_cover_with_fewest_patches_and_ownership_partitions(length, patch, overlap):
    length = max(length, patch)
    starts = tile_starts(length, patch, overlap)
    assert starts[0] == 0 and starts[-1] == length - patch
    assert all(b - a <= patch * (1 - overlap) + 1 for a, b in zip(starts, starts[1:]))
    if overlap == 0:
        assert len(starts) == -(-length // patch)  # the fewest that can cover
    owned = owned_ranges(starts, patch, length)
    assert owned[0][0] == 0 and owned[-1][1] == length
    for (a, b), (c, _), s in zip(owned, owned[1:] + [(length, None)], starts):
        assert b == c and s <= a < b <= s + patch  # contiguous, each inside its own tile


def test_box_from_coarse_covers_the_coarse_voxels_and_clips():
    box = geometry.box_from_coarse((1, 0, 5), (3, 4, 8), (8, 8, 8), (20, 16, 8), (1, 2, 0))
    assert box.start == (1, 0, 5) and box.stop == (9, 10, 8)
    assert geometry.Box.whole((3, 4, 5)).shape == (3, 4, 5)


def test_subgrid_geometry_of_a_resize_matches_simpleitk_resampling():
    image = sitk.Image([10, 8, 6], sitk.sitkFloat32)
    image.SetSpacing((0.7, 1.1, 2.5))
    image.SetOrigin((3.0, -4.0, 12.0))
    image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    offset, scale = geometry.resize_offset_and_scale((1, 2, 3), (4, 6, 6), (2, 3, 2))
    grid = geometry.VoxelGrid.subgrid(image, offset, scale, (2, 3, 2))
    # the grid's corner (continuous index -0.5) must be the region's corner in physical space
    corner = np.array(grid.origin) - np.array(grid.direction).reshape(3, 3) @ (np.array(grid.spacing) / 2)
    region_corner = image.TransformContinuousIndexToPhysicalPoint((3 - 0.5, 2 - 0.5, 1 - 0.5))
    np.testing.assert_allclose(corner, region_corner, atol=1e-9)
    assert grid.size == (2, 3, 2)
    np.testing.assert_allclose(grid.spacing, (0.7 * 3, 1.1 * 2, 2.5 * 2))


def test_component_filters():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0:4, 0:4, 0:4] = 3
    labels[7:9, 7:9, 7:9] = 3  # smaller piece of the same organ
    labels[0:2, 8:10, 0:2] = 5  # a single-component organ
    kept = keep_largest_component_per_label(labels)
    assert (kept == 3).sum() == 64 and (kept == 5).sum() == 8 and kept[8, 8, 8] == 0
    mask = remove_small_components(labels > 0, 9)
    assert mask.sum() == 64
    assert remove_small_components(np.zeros((3, 3, 3), bool), 5).sum() == 0


@pytest.mark.real_data
def test_case_names_and_listing(tmp_path):
    assert case_name("a/liver_7_0000.nii.gz") == "liver_7" and case_name("x.nii.gz") == "x"
    assert case_name("scan.mha") == "scan" and case_name("folder/dicom_series") == "dicom_series"
    im = sitk.Image([4, 4, 4], sitk.sitkInt16)
    sitk.WriteImage(im, str(tmp_path / "a_0000.nii.gz"))
    sitk.WriteImage(im, str(tmp_path / "b.nrrd"))
    (tmp_path / "notes.txt").write_text("ignored")
    assert [(c.name, c.path.name) for c in list_cases([tmp_path])] == [("a", "a_0000.nii.gz"), ("b", "b.nrrd")]
    sitk.WriteImage(im, str(tmp_path / "a.nii"))
    with pytest.raises(ValueError, match="same output a.nii.gz"):
        list_cases([tmp_path])
    with pytest.raises(ValueError, match="unsupported file type"):
        list_cases([tmp_path / "notes.txt"])
    dicom = real_data("totalsegmentator/example_ct_dicom")
    assert [(c.name, c.path) for c in list_cases([dicom])] == [("example_ct_dicom", dicom)]
    with pytest.raises(FileNotFoundError, match="no images"):
        (tmp_path / "empty").mkdir()
        list_cases([tmp_path / "empty"])


class _AxisProbe(torch.nn.Module):
    """Logits whose argmax is the voxel's index along the network's first axis: checks the transposes."""

    def forward(self, x):
        n = x.shape[2]
        ramp = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1, 1).expand_as(x)
        return torch.cat([-(ramp - c) ** 2 for c in range(n)], 1)


def test_network_model_applies_transpose_forward_and_back():
    model = NetworkModel(_AxisProbe(), transpose_forward=(2, 0, 1))
    out = model(np.zeros((1, 1, 3, 4, 5), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (3, 4, 5) and out.dtype == np.uint8
    # the network's first axis is array axis 2 (x): the labels must count along x
    np.testing.assert_array_equal(out, np.broadcast_to(np.arange(5), (3, 4, 5)))


def test_load_phase_reads_plans_in_array_order(tmp_path):
    folder = write_random_model_folder(
        tmp_path / "T__P__cfg", "Dataset001_X", "cfg", "nnunetv2_flare.networks.FlareOrganNet",
        {"features_per_stage": [6, 12, 24, 48], "head_dim": 6}, {"background": 0, "a": 1, "b": 2}, (32, 48, 16),
        (1.5, 1.0, 2.0), fold=0, transpose_forward=(2, 0, 1))
    phase = load_phase(folder, fold=0)
    assert phase.num_classes == 3
    # network order (32, 48, 16) with transpose_forward (2, 0, 1): array axis 2 is the network's first
    assert phase.patch_size == (48, 16, 32) and phase.spacing == (1.0, 2.0, 1.5)
    assert phase.normalization.lower < phase.normalization.upper
    x = np.random.default_rng(0).standard_normal((1, 1, *phase.patch_size)).astype(np.float32)
    out = phase.model(x)
    assert out.shape == phase.patch_size and out.dtype == np.uint8
    with torch.inference_mode():  # the network sees (z, y, x) permuted by transpose_forward, the labels come back
        logits = phase.model.network(torch.from_numpy(x).permute(0, 1, 4, 2, 3))
    np.testing.assert_array_equal(out, logits.argmax(1)[0].permute(1, 2, 0).numpy())
    with pytest.raises(FileNotFoundError, match="fold_all"):
        load_phase(folder, fold="all")


def test_the_cascade_works_in_the_orientation_the_models_were_trained_in(tmp_path):
    """Plans that read with NibabelIOWithReorient trained on RAS arrays: the cascade then reorients to RAS; plans
    that kept each file's voxel order leave the choice to the cascade (LPS); models that disagree are refused."""
    import json

    from nnunetv2_flare.inference.inputs.orientation import DEFAULT_ORIENTATION, models_orientation
    from nnunetv2_flare.inference.predictor import FlareCascadePredictor
    folders = {}
    for reader in ("SimpleITKIO", "NibabelIOWithReorient"):
        folders[reader] = write_random_model_folder(
            tmp_path / reader / "T__P__cfg", "Dataset001_X", "cfg", "nnunetv2_flare.networks.FlareOrganNet",
            {"features_per_stage": [6, 12, 24, 48], "head_dim": 6}, {"background": 0, "a": 1}, (32, 32, 32),
            (1.5, 1.0, 1.0))
        plans_file = folders[reader] / "plans.json"
        plans_file.write_text(json.dumps(dict(json.loads(plans_file.read_text()), image_reader_writer=reader)))
    as_stored, ras = (load_phase(folders[r]) for r in ("SimpleITKIO", "NibabelIOWithReorient"))
    assert (as_stored.orientation, ras.orientation) == (None, "RAS")
    assert FlareCascadePredictor(ras, ras).orientation == "RAS"
    assert FlareCascadePredictor(as_stored, as_stored).orientation == DEFAULT_ORIENTATION == "LPS"
    assert FlareCascadePredictor(ras, ras, CascadeSettings(orientation="LPS")).orientation == "LPS"  # the user's choice
    assert FlareCascadePredictor(None, ras).orientation == "RAS"  # organs only
    assert models_orientation(None, "RAS") == "RAS"
    with pytest.raises(ValueError, match="different voxel orientations"):
        models_orientation("LPS", "RAS")


def test_argmax_labels_equals_torch_argmax_including_ties() -> None:
    from nnunetv2_flare.inference.models.backends import argmax_labels
    g = torch.Generator().manual_seed(0)
    logits = torch.randint(-3, 4, (14, 9, 10, 11), generator=g).float()  # many exact ties
    expected = logits.argmax(0).to(torch.uint8).numpy()
    np.testing.assert_array_equal(argmax_labels(logits.numpy()), expected)
    assert argmax_labels(np.random.randn(2, 4, 4, 4).astype(np.float32)).dtype == np.uint8


def test_foreground_box_is_half_open_grows_by_the_margin_and_clips():
    mask = np.zeros((6, 7, 8), bool)
    mask[2, 3:5, 7] = True
    assert foreground_box(mask) == ((2, 3, 7), (3, 5, 8))
    assert foreground_box(mask, (1, 4, 2)) == ((1, 0, 5), (4, 7, 8))
    assert foreground_box(np.zeros((2, 2), bool)) is None
    assert margin_voxels(15.0, (2.5, 0.8, 1.0)) == (6, 19, 15)


def _spheres(shape=(60, 80, 80)) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    truth = np.zeros(shape, np.uint8)
    truth[(zz - 30) ** 2 + (yy - 40) ** 2 + (xx - 38) ** 2 < 20 ** 2] = 1
    truth[(zz - 30) ** 2 + (yy - 40) ** 2 + (xx - 62) ** 2 < 6 ** 2] = 2  # touches organ 1: a shared boundary
    return truth


def _restored(labels: np.ndarray, scores: np.ndarray, shape, slices_per_slab: int = 16) -> np.ndarray:
    return np.concatenate([part for _, part in resize_labels_linear_slabs(labels, scores, shape, slices_per_slab)])


def test_linear_restore_is_nnunets_interpolated_argmax_and_beats_nearest() -> None:
    """Upsampling labels of a coarse grid: where labels meet, the interpolated scores place the boundary between
    voxels, so the result is closer to the fine truth than nearest neighbour; it equals the argmax of the fully
    interpolated scores (nnU-Net's export) and does not depend on the slab size."""
    truth = _spheres()
    scores = np.stack([resize_linear((truth == k).astype(np.float32), (24, 32, 32)) for k in range(3)])
    labels = argmax_labels(scores)
    nearest = resize_nearest(labels, truth.shape)
    linear = _restored(labels, scores.astype(np.float16), truth.shape)
    full = argmax_labels(np.stack([resize_linear(c, truth.shape) for c in scores]))
    assert (linear == full).mean() >= 0.999
    assert np.array_equal(linear, _restored(labels, scores.astype(np.float16), truth.shape, slices_per_slab=1))
    for organ in (1, 2):
        assert dice(linear == organ, truth == organ) > dice(nearest == organ, truth == organ) + 0.01


def test_linear_restore_keeps_to_the_neighbours_labels() -> None:
    """A component that postprocessing removed from the labels stays removed, whatever its scores say."""
    truth = _spheres()
    scores = np.stack([resize_linear((truth == k).astype(np.float32), (24, 32, 32)) for k in range(3)])
    labels = argmax_labels(scores)
    labels[labels == 2] = 0  # as if organ 2 had been a small extra component
    restored = _restored(labels, scores.astype(np.float16), truth.shape)
    assert 2 not in np.unique(restored) and (restored == 1).sum() > 0


def test_linear_restore_needs_class_scores() -> None:
    image_norm = CTNormalization(-1000.0, 1000.0, 0.0, 200.0)
    labels_only = lambda x, grid: np.zeros(x.shape[2:], np.uint8)  # noqa: E731
    with pytest.raises(ValueError, match="class scores"):
        FlareCascadePredictor.from_networks(labels_only, labels_only, image_norm, image_norm,
                                            settings=CascadeSettings(restore="linear"))
    with pytest.raises(ValueError, match="restore must be one of"):
        FlareCascadePredictor.from_networks(labels_only, labels_only, image_norm, image_norm,
                                            settings=CascadeSettings(restore="cubic"))


def test_ensemble_scores_are_one_members_logits_or_the_mean_probability() -> None:
    """What restore='linear' interpolates: a single model's logits (no softmax to pay for), an ensemble's mean
    probabilities; the labels are their argmax either way."""
    from nnunetv2_flare.inference.models.ensemble import FoldEnsemble, softmax_

    class Fixed:
        def __init__(self, logits: np.ndarray) -> None:
            self.value = logits

        def logits(self, x, grid=None) -> np.ndarray:
            return self.value.copy()

    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(4, 3, 3, 3)).astype(np.float32) for _ in range(2))
    x = np.zeros((1, 1, 3, 3, 3), np.float32)
    np.testing.assert_array_equal(FoldEnsemble([Fixed(a)]).scores(x), a)
    mean = (softmax_(a.copy()) + softmax_(b.copy())) / 2
    pair = FoldEnsemble([Fixed(a), Fixed(b)])
    np.testing.assert_allclose(pair.scores(x), mean, rtol=1e-6)
    np.testing.assert_array_equal(pair(x), argmax_labels(mean))
    np.testing.assert_array_equal(FoldEnsemble([Fixed(a)])(x), argmax_labels(a))


class _Logits:
    """A LogitsModel made of a function of the input volume (1, 1, *shape) -> (*shape): two classes, f and -f."""

    def __init__(self, function) -> None:
        self.function = function

    def logits(self, x, grid=None) -> np.ndarray:
        value = self.function(x[0, 0]).astype(np.float32)
        return np.stack([value, -value])


def test_shifted_input_comes_back_in_place() -> None:
    """A model that works voxel by voxel gives the same logits shifted or not, but for the repeated last voxels."""
    from nnunetv2_flare.inference.models.ensemble import SHIFT_TTA_OFFSETS, Shifted

    x = np.random.default_rng(0).normal(size=(1, 1, 6, 7, 8)).astype(np.float32)
    pointwise = _Logits(lambda v: v * v)
    assert len(set(SHIFT_TTA_OFFSETS)) == 8 and (0, 0, 0) in SHIFT_TTA_OFFSETS
    for shift in SHIFT_TTA_OFFSETS:
        out = Shifted(pointwise, shift).logits(x)
        assert out.shape == (2, 6, 7, 8)
        kept = tuple(slice(0, n - s) for n, s in zip(x.shape[2:], shift))
        np.testing.assert_array_equal(out[(slice(None), *kept)], pointwise.logits(x)[(slice(None), *kept)])


def test_shifts_show_a_stride_2_model_its_other_sampling_phase() -> None:
    """A model that reads every other voxel along z (as a stride-2 stem does) and repeats it: shifted by one, it reads
    the odd voxels; the two phases averaged follow the input more closely than either."""
    from nnunetv2_flare.inference.models.ensemble import Shifted

    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 2, 2))[None, None]
    every_other = _Logits(lambda v: np.repeat(v[::2], 2, axis=0))
    even = every_other.logits(ramp)[0, :, 0, 0]
    odd = Shifted(every_other, (1, 0, 0)).logits(ramp)[0, :, 0, 0]
    np.testing.assert_array_equal(even, [0, 0, 2, 2, 4, 4, 6, 6])
    np.testing.assert_array_equal(odd, [0, 1, 1, 3, 3, 5, 5, 5])
    truth = np.arange(8)
    assert np.abs((even + odd) / 2 - truth)[:7].max() == 0.5 < np.abs(even - truth).max()


def test_a_tile_of_the_wrong_shape_is_refused() -> None:
    from nnunetv2_flare.inference.core.sliding_window import sliding_window_labels, sliding_window_scores

    class Batched:  # labels with a leading batch axis, scores without their class axis
        def __call__(self, x, grid):
            return np.zeros(x.shape[1:], np.uint8)

        def scores(self, x, grid):
            return np.zeros(x.shape[2:], np.float32)

    volume = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(RuntimeError, match="labels of shape"):
        sliding_window_labels(volume, (8, 8, 8), Batched(), lambda start: None, progress=False)
    with pytest.raises(RuntimeError, match="class scores of shape"):
        sliding_window_scores(volume, (8, 8, 8), Batched(), lambda start: None, progress=False)


def test_ct_normalization_is_nnunets() -> None:
    """The cascade's CTNormalization (kept because the container runs without nnU-Net) gives nnU-Net's values."""
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization as NnUNets

    props = {"percentile_00_5": -950.0, "percentile_99_5": 1300.0, "mean": 42.5, "std": 180.0}
    x = np.random.default_rng(0).uniform(-2000, 3000, (7, 9, 11)).astype(np.float32)
    expected = NnUNets(use_mask_for_norm=False, intensityproperties=props).run(x.copy())
    np.testing.assert_array_equal(CTNormalization.from_intensity_properties(props)(x.copy()), expected)
