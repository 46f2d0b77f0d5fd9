"""FLARE DSC / NSD rules on hand-made masks, and agreement with a brute-force surface-distance computation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_flare.evaluation import evaluate_case, evaluate_folders, evaluate_organ, normalized_surface_dice
from nnunetv2_flare.evaluation.cli import main as evaluate_main
from nnunetv2_flare.evaluation.evaluate_folders import superior_inferior_array_axis
from nnunetv2_flare.labels import FLARE_ORGANS, NSD_TOLERANCE_MM

LIVER, AORTA, GALLBLADDER, DUODENUM = 1, 5, 9, 12


def box(shape, lo, hi) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def brute_force_scores(ref: np.ndarray, pred: np.ndarray, spacing, tolerance: float) -> tuple[float, float]:
    """DSC and NSD from explicit pairwise distances between surface voxel centres (no distance transform)."""
    def surface_coordinates(mask):
        padded = np.pad(mask, 1)
        core = padded[1:-1, 1:-1, 1:-1]
        all_neighbours_inside = np.ones_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                all_neighbours_inside &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(core & ~all_neighbours_inside) * np.asarray(spacing, float)

    s_ref, s_pred = surface_coordinates(ref), surface_coordinates(pred)
    pairwise = np.linalg.norm(s_ref[:, None, :] - s_pred[None, :, :], axis=-1)
    limit = tolerance + 1e-6  # distances equal to the tolerance count as within it
    close = (pairwise.min(axis=1) <= limit).sum() + (pairwise.min(axis=0) <= limit).sum()
    dsc = 2 * (ref & pred).sum() / (ref.sum() + pred.sum())
    return float(dsc), float(close / (len(s_ref) + len(s_pred)))


def test_absent_in_both_scores_one_and_absent_in_one_scores_zero():
    empty = np.zeros((8, 8, 8), np.uint8)
    scores = evaluate_case(empty, empty, (1, 1, 1))
    assert all(v == 1.0 for v in scores["DSC"].values()) and all(v == 1.0 for v in scores["NSD"].values())
    assert scores["mean_DSC"] == scores["mean_NSD"] == 1.0

    organ = empty.copy()
    organ[2:5, 2:5, 2:5] = LIVER
    for ref, pred in ((organ, empty), (empty, organ)):
        scores = evaluate_case(ref, pred, (1, 1, 1))
        assert scores["DSC"][LIVER] == scores["NSD"][LIVER] == 0.0
        assert scores["DSC"][AORTA] == scores["NSD"][AORTA] == 1.0  # absent in both
        assert scores["mean_DSC"] == pytest.approx(12 / 13)


def test_tubular_organs_are_scored_only_on_the_reference_slices():
    ref = box((20, 10, 10), (5, 3, 3), (10, 7, 7))
    pred = box((20, 10, 10), (5, 3, 3), (16, 7, 7))  # the same tube, continued 6 slices beyond the reference
    assert evaluate_organ(ref, pred, (1, 1, 1), 2, restrict_to_reference_slices=True) == (1.0, 1.0)
    dsc, nsd = evaluate_organ(ref, pred, (1, 1, 1), 2, restrict_to_reference_slices=False)
    assert dsc == pytest.approx(2 * 5 / 16) and nsd < 1

    labels_ref, labels_pred = ref.astype(np.uint8) * AORTA, pred.astype(np.uint8) * AORTA
    assert evaluate_case(labels_ref, labels_pred, (1, 1, 1))["DSC"][AORTA] == 1.0
    liver_ref, liver_pred = ref.astype(np.uint8) * LIVER, pred.astype(np.uint8) * LIVER
    assert evaluate_case(liver_ref, liver_pred, (1, 1, 1))["DSC"][LIVER] < 1.0

    # the slab is the reference's, along the slice axis that is asked for
    assert evaluate_organ(ref.transpose(2, 1, 0), pred.transpose(2, 1, 0), (1, 1, 1), 2,
                          restrict_to_reference_slices=True, slice_axis=2) == (1.0, 1.0)
    # a prediction only outside the reference's slab is a miss
    outside = box((20, 10, 10), (12, 3, 3), (16, 7, 7))
    assert evaluate_organ(ref, outside, (1, 1, 1), 2, restrict_to_reference_slices=True) == (0.0, 0.0)


def test_nsd_is_zero_where_dsc_is_below_one_tenth():
    ref = box((16, 16, 16), (2, 2, 2), (12, 12, 12))
    pred = box((16, 16, 16), (2, 2, 2), (3, 3, 3))  # one voxel on the reference's surface
    assert normalized_surface_dice(ref, pred, (1, 1, 1), 5) > 0  # the raw NSD is not zero...
    dsc, nsd = evaluate_organ(ref, pred, (1, 1, 1), 5)
    assert dsc == pytest.approx(2 / 1001) and nsd == 0.0  # ...but the rule sets it to 0


def test_anisotropic_spacing_changes_nsd_as_expected():
    ref = box((12, 12, 12), (3, 3, 3), (8, 8, 8))
    shifted_along_0 = np.roll(ref, 1, axis=0)
    shifted_along_2 = np.roll(ref, 1, axis=2)
    tolerance = NSD_TOLERANCE_MM[GALLBLADDER]  # 2 mm
    assert normalized_surface_dice(ref, shifted_along_0, (1, 1, 1), tolerance) == 1.0
    # a one-voxel shift along a 3 mm axis moves the moved faces 3 mm: beyond the 2 mm tolerance
    nsd_thick = normalized_surface_dice(ref, shifted_along_0, (3, 1, 1), tolerance)
    assert nsd_thick < 1.0
    assert nsd_thick == pytest.approx(brute_force_scores(ref, shifted_along_0, (3, 1, 1), tolerance)[1])
    # the same shift along a 1 mm axis of the same anisotropic grid stays within tolerance
    assert normalized_surface_dice(ref, shifted_along_2, (3, 1, 1), tolerance) == 1.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.7)])
def test_agrees_with_brute_force_surface_distances(spacing):
    shape = (18, 30, 28)
    rng = np.random.default_rng(3)
    ref = ellipsoid(shape, (9, 15, 14), (6, 10, 9)) | ellipsoid(shape, (6, 10, 20), (3, 5, 5))
    pred = ellipsoid(shape, (9.6, 13.8, 14.9), (5.5, 11, 8)) ^ (rng.random(shape) < 0.02)
    ref_map, pred_map = ref.astype(np.uint8) * DUODENUM, pred.astype(np.uint8) * DUODENUM
    ref_map[ellipsoid(shape, (9, 15, 5), (4, 4, 3))] = LIVER
    pred_map[ellipsoid(shape, (8, 16, 6), (5, 12, 4))] = LIVER
    scores = evaluate_case(ref_map, pred_map, spacing)
    for label in (DUODENUM, LIVER):
        expected_dsc, expected_nsd = brute_force_scores(ref_map == label, pred_map == label, spacing,
                                                        NSD_TOLERANCE_MM[label])
        assert 0.1 < expected_nsd < 1.0  # a case where the tolerance matters
        assert scores["DSC"][label] == pytest.approx(expected_dsc, abs=1e-12)
        assert scores["NSD"][label] == pytest.approx(expected_nsd, abs=1e-12)


def test_superior_inferior_axis_follows_the_direction_cosines():
    image = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    assert superior_inferior_array_axis(image) == 0
    image.SetDirection((1, 0, 0, 0, 0, -1, 0, 1, 0))  # coronal stack: index axis y runs along physical z
    assert superior_inferior_array_axis(image) == 1


def _write(array: np.ndarray, path, spacing=(0.8, 0.8, 2.5)) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_folders_and_command_line(tmp_path, capsys):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir(), pred_dir.mkdir()
    case = np.zeros((10, 16, 16), np.uint8)
    case[2:8, 2:8, 2:8] = LIVER
    case[3:6, 10:14, 10:14] = AORTA
    _write(case, ref_dir / "a.nii.gz")
    _write(case, ref_dir / "b.nii.gz")
    _write(case, pred_dir / "a.nii.gz")  # b has no prediction

    summary = evaluate_folders(ref_dir, pred_dir, progress=False)
    assert summary["num_cases"] == 2 and summary["missing_predictions"] == ["b.nii.gz"]
    assert summary["per_case"][0]["mean_DSC"] == 1.0
    assert summary["per_case"][1]["mean_DSC"] == pytest.approx(11 / 13)
    assert summary["mean_DSC"] == pytest.approx((1 + 11 / 13) / 2)
    assert summary["per_organ"]["DSC"]["liver"] == 0.5

    out = tmp_path / "summary.json"
    evaluate_main(["-ref", str(ref_dir), "-pred", str(pred_dir), "-o", str(out), "-l", "1", "5"])
    written = json.loads(out.read_text())
    assert list(written["per_organ"]["DSC"]) == [FLARE_ORGANS[LIVER], FLARE_ORGANS[AORTA]]
    assert written["mean_DSC"] == pytest.approx(0.5)
    printed = capsys.readouterr().out
    assert "liver" in printed and "missing prediction" in printed

    _write(case, pred_dir / "b.nii.gz", spacing=(1.0, 1.0, 1.0))
    with pytest.raises(SystemExit, match="spacing"):
        evaluate_main(["-ref", str(ref_dir), "-pred", str(pred_dir)])


def test_foreground_agreement_counts_the_union_of_foregrounds() -> None:
    from nnunetv2_flare.evaluation.metrics import foreground_agreement
    a = np.array([0, 0, 1, 2, 3, 3])
    b = np.array([0, 1, 1, 2, 0, 4])
    assert foreground_agreement(a, b) == (2, 5)  # voxels 1..5 are foreground in either; 2 and 3 agree
    assert foreground_agreement(np.zeros(4), np.zeros(4)) == (0, 0)
