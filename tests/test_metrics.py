"""FLARE's DSC / NSD: the surface measure pinned on hand-made masks with known areas and distances, FLARE's per-organ
rules, and the folder / command-line behaviour. Agreement with FLARE's own script is in test_official_agreement.py.

Arrays here are in FLARE's axis order (x, y, z); the third axis is the slice axis of the tubular-organ rule.
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_flare.evaluation import evaluate_case, evaluate_folders, evaluate_organ, normalized_surface_dice
from nnunetv2_flare.evaluation.cli import build_parser, main as evaluate_main
from nnunetv2_flare.evaluation.metrics import (
    NSD_DSC_THRESHOLD,
    reference_slice_range,
    surface_area_lookup,
    surface_distances,
)
from nnunetv2_flare.labels import FLARE_ORGANS, NSD_TOLERANCE_MM

LIVER, AORTA, IVC, GALLBLADDER, ESOPHAGUS, DUODENUM = 1, 5, 6, 9, 10, 12


def box(shape, lo, hi) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=float)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


# --- the surface measure ----------------------------------------------------------------------------------------

def box_surface_area(n: tuple[int, int, int], spacing: tuple[float, float, float]) -> float:
    """Closed-form area of the corner-based (marching-cubes) surface of an n0 x n1 x n2 voxel box.

    Inner face corners carry flat squares (s_i * s_j), inner edge corners carry chamfer strips (length s_k, width
    half the diagonal of an s_i x s_j rectangle), and the 8 box corners carry one triangle each, (1/8) |(s1 s2,
    s0 s2, s0 s1)|; together those make an octahedron-like cap. A single voxel is only the 8 triangles:
    sqrt((ab)^2 + (bc)^2 + (ca)^2), e.g. sqrt(3) for a unit cube (its 6 faces have area 6)."""
    faces = edges = 0.0
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):  # faces normal to axis i, edges along axis k
        faces += 2 * (n[j] - 1) * (n[k] - 1) * spacing[j] * spacing[k]
        edges += 4 * (n[k] - 1) * spacing[k] * 0.5 * math.hypot(spacing[i], spacing[j])
    a, b, c = spacing
    return faces + edges + math.sqrt((a * b) ** 2 + (b * c) ** 2 + (c * a) ** 2)


@pytest.mark.parametrize("n", [(1, 1, 1), (3, 4, 1), (1, 1, 6), (5, 3, 4)])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.9)])
def test_surface_area_of_boxes_matches_the_closed_form(n, spacing):
    mask = box((9, 9, 9), (2, 2, 2), tuple(2 + v for v in n))
    areas = surface_distances(mask, mask, spacing).areas_ref
    assert areas.sum() == pytest.approx(box_surface_area(n, spacing), rel=1e-12)


def test_one_voxel_organ_area_and_scores():
    a, b, c = 0.7, 1.3, 2.9
    one = box((5, 5, 5), (2, 2, 2), (3, 3, 3))
    distances = surface_distances(one, one, (a, b, c))
    assert len(distances.areas_ref) == 8  # its 8 corners
    assert distances.areas_ref.sum() == pytest.approx(math.sqrt((a * b) ** 2 + (b * c) ** 2 + (c * a) ** 2))
    assert distances.areas_ref.sum() < 2 * (a * b + b * c + c * a)  # not the voxel's face area
    assert evaluate_organ(one, one, (a, b, c), 2) == (1.0, 1.0)


def test_lookup_is_complement_symmetric_with_known_cells():
    spacing = (0.7, 1.3, 2.9)
    areas = surface_area_lookup(spacing)
    assert areas[0] == areas[255] == 0 and (areas[1:255] > 0).all()
    assert np.allclose(areas, areas[::-1])  # code 255 - k is k's complement: the same surface
    a, b, c = spacing
    assert areas[1] == pytest.approx(math.sqrt((a * b) ** 2 + (b * c) ** 2 + (c * a) ** 2) / 8)  # one corner
    # half a cell, split across axis 0 (corners with a = 1: bits 4..7): a flat s1 x s2 square
    assert areas[0b11110000] == pytest.approx(b * c)
    assert areas[0b11001100] == pytest.approx(a * c)  # split across axis 1
    assert areas[0b10101010] == pytest.approx(a * b)  # split across axis 2


def test_corner_surface_of_a_ball_is_close_to_its_true_area():
    spacing, radius = (0.8, 0.8, 2.0), 12.0
    shape = (40, 40, 16)
    grid = np.indices(shape, dtype=float)
    ball = sum((((g - (s - 1) / 2) * h) ** 2) for g, s, h in zip(grid, shape, spacing)) <= radius ** 2
    area = surface_distances(ball, ball, spacing).areas_ref.sum()
    faces = sum(np.count_nonzero(np.diff(np.pad(ball, 1).astype(np.int8), axis=axis))
                * np.prod([h for i, h in enumerate(spacing) if i != axis]) for axis in range(3))
    true_area = 4 * math.pi * radius ** 2
    assert 1.0 < area / true_area < 1.2  # terraced by 2 mm slices, still close
    assert faces / true_area > 1.4  # counting voxel faces is not


def test_surface_dice_pinned_on_two_voxels():
    """Two one-voxel masks, one slice apart along a 3 mm axis: the 4 shared corners are at distance 0, the other
    4 of each at exactly 3 mm. Every corner carries the same triangle, so NSD = 4 + 4 of 16 elements."""
    ref = box((4, 4, 5), (1, 1, 1), (2, 2, 2))
    pred = box((4, 4, 5), (1, 1, 2), (2, 2, 3))
    spacing = (0.9, 1.1, 3.0)
    assert normalized_surface_dice(ref, pred, spacing, 2.0) == pytest.approx(0.5)
    assert normalized_surface_dice(ref, pred, spacing, 3.0) == 1.0  # distance == tolerance counts, no epsilon
    assert normalized_surface_dice(ref, pred, (0.9, 1.1, 3.0 + 1e-9), 3.0) == pytest.approx(0.5)


def test_anisotropic_spacing_weights_distances_per_axis():
    ref = box((12, 12, 12), (3, 3, 3), (8, 8, 8))
    tolerance = NSD_TOLERANCE_MM[GALLBLADDER]  # 2 mm
    shifted_along_0, shifted_along_2 = np.roll(ref, 1, axis=0), np.roll(ref, 1, axis=2)
    assert normalized_surface_dice(ref, shifted_along_0, (1, 1, 1), tolerance) == 1.0
    # a one-voxel shift along a 3 mm axis moves the end faces 3 mm: beyond the 2 mm tolerance...
    assert normalized_surface_dice(ref, shifted_along_0, (3, 1, 1), tolerance) < 0.9
    # ...and along a 1 mm axis of the same grid it stays within it
    assert normalized_surface_dice(ref, shifted_along_2, (3, 1, 1), tolerance) == 1.0


def brute_force_nsd(ref: np.ndarray, pred: np.ndarray, spacing, tolerance: float) -> float:
    """NSD with the corner codes found by explicit loops and distances from all pairs of surface corners."""
    def elements(mask):
        padded = np.pad(mask, 1)
        points, codes = [], []
        for corner in itertools.product(*(range(s + 1) for s in mask.shape)):
            code = sum(int(padded[corner[0] + a, corner[1] + b, corner[2] + c]) << (4 * a + 2 * b + c)
                       for a, b, c in itertools.product((0, 1), repeat=3))
            if code not in (0, 255):
                points.append(corner)
                codes.append(code)
        return np.asarray(points, float) * np.asarray(spacing, float), surface_area_lookup(tuple(spacing))[codes]

    (p_ref, a_ref), (p_pred, a_pred) = elements(ref), elements(pred)
    pairwise = np.linalg.norm(p_ref[:, None, :] - p_pred[None, :, :], axis=-1)
    close = a_ref[pairwise.min(axis=1) <= tolerance].sum() + a_pred[pairwise.min(axis=0) <= tolerance].sum()
    return float(close / (a_ref.sum() + a_pred.sum()))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.8, 2.3)])
def test_agrees_with_brute_force_surface_distances(spacing):
    shape = (14, 16, 9)
    rng = np.random.default_rng(3)
    ref = ellipsoid(shape, (7, 8, 4), (5, 6, 3)) | ellipsoid(shape, (4, 5, 6), (2, 3, 2))
    pred = ellipsoid(shape, (7.6, 6.8, 4.4), (4.5, 7, 3)) ^ (rng.random(shape) < 0.02)
    for tolerance in (1.0, 2.0, 3.0):
        expected = brute_force_nsd(ref, pred, spacing, tolerance)
        assert 0.1 < expected < 1.0  # a case where the tolerance matters
        assert normalized_surface_dice(ref, pred, spacing, tolerance) == pytest.approx(expected, abs=1e-12)


# --- FLARE's per-organ rules ------------------------------------------------------------------------------------

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


def test_nsd_is_zero_where_dsc_is_below_0_2():
    assert NSD_DSC_THRESHOLD == 0.2
    ref = box((40, 4, 4), (0, 1, 1), (20, 2, 2))  # a row of 20 voxels
    low = box((40, 4, 4), (17, 1, 1), (37, 2, 2))  # 3 shared: DSC 0.15
    at_threshold = box((40, 4, 4), (16, 1, 1), (36, 2, 2))  # 4 shared: DSC 0.2 exactly
    assert normalized_surface_dice(ref, low, (1, 1, 1), 5) > 0  # the raw NSD is not zero...
    assert evaluate_organ(ref, low, (1, 1, 1), 5) == (pytest.approx(0.15), 0.0)  # ...but the rule makes it 0
    dsc, nsd = evaluate_organ(ref, at_threshold, (1, 1, 1), 5)
    assert dsc == 0.2 and nsd == normalized_surface_dice(ref, at_threshold, (1, 1, 1), 5) > 0


def test_tubes_are_cut_to_the_reference_range_with_its_last_slice_left_out():
    shape = (10, 10, 20)
    ref = box(shape, (3, 3, 5), (7, 7, 10))  # labelled on slices 5..9 of the third axis
    assert reference_slice_range(ref) == slice(5, 9)
    without_last = box(shape, (3, 3, 5), (7, 7, 9))
    without_first = box(shape, (3, 3, 6), (7, 7, 10))
    continued = box(shape, (3, 3, 5), (7, 7, 16))
    for pred in (without_last, continued):  # differences on slice 9 and beyond are not scored
        assert evaluate_organ(ref, pred, (1, 1, 1), 2, restrict_to_reference_slices=True) == (1.0, 1.0)
    assert evaluate_organ(ref, without_first, (1, 1, 1), 2, restrict_to_reference_slices=True)[0] < 1.0
    assert evaluate_organ(ref, without_last, (1, 1, 1), 2)[0] < 1.0  # without the rule it would count

    # case level: aorta, IVC and esophagus get the rule, other organs do not
    for label, restricted in ((AORTA, True), (IVC, True), (ESOPHAGUS, True), (LIVER, False), (DUODENUM, False)):
        scores = evaluate_case(ref.astype(np.uint8) * label, without_last.astype(np.uint8) * label, (1, 1, 1))
        assert (scores["DSC"][label] == 1.0) == restricted, FLARE_ORGANS[label]

    # the range runs along the third axis whatever the organ's shape: a tube lying along the first axis
    lying = box(shape, (0, 3, 5), (10, 7, 8))
    shorter = box(shape, (2, 3, 5), (10, 7, 7))  # also 2 voxels shorter along the first axis: scored
    assert evaluate_organ(lying, shorter, (1, 1, 1), 2, restrict_to_reference_slices=True)[0] == pytest.approx(
        2 * 16 / (20 + 16))


def test_prediction_only_outside_the_range_scores_zero():
    shape = (10, 10, 20)
    ref = box(shape, (3, 3, 5), (7, 7, 10))
    on_last_and_beyond = box(shape, (3, 3, 9), (7, 7, 14))  # not empty, but nothing on slices 5..8
    assert evaluate_organ(ref, on_last_and_beyond, (1, 1, 1), 2, restrict_to_reference_slices=True) == (0.0, 0.0)
    scores = evaluate_case(ref.astype(np.uint8) * AORTA, on_last_and_beyond.astype(np.uint8) * AORTA, (1, 1, 1))
    assert scores["DSC"][AORTA] == scores["NSD"][AORTA] == 0.0


def test_tube_on_a_single_reference_slice_is_scored_on_that_slice():
    shape = (10, 10, 12)
    ref = box(shape, (3, 3, 6), (7, 7, 7))  # slice 6 only: FLARE's [6, 6) range is empty
    assert reference_slice_range(ref) == slice(6, 7)
    assert evaluate_organ(ref, ref, (1, 1, 1), 2, restrict_to_reference_slices=True) == (1.0, 1.0)
    thicker = box(shape, (3, 3, 5), (7, 7, 9))  # the same on slice 6, more elsewhere: not scored
    assert evaluate_organ(ref, thicker, (1, 1, 1), 2, restrict_to_reference_slices=True) == (1.0, 1.0)
    half = box(shape, (3, 3, 6), (5, 7, 7))
    dsc, nsd = evaluate_organ(ref, half, (3, 1, 1), 2, restrict_to_reference_slices=True)
    assert dsc == pytest.approx(2 * 8 / (16 + 8)) and 0 < nsd < 1
    elsewhere = box(shape, (3, 3, 7), (7, 7, 9))
    assert evaluate_organ(ref, elsewhere, (1, 1, 1), 2, restrict_to_reference_slices=True) == (0.0, 0.0)


def test_case_level_rejects_other_grids_and_unknown_labels():
    labels = np.zeros((6, 6, 6), np.uint8)
    with pytest.raises(ValueError, match="grid"):
        evaluate_case(labels, labels[:5], (1, 1, 1))
    with pytest.raises(ValueError, match="not FLARE organs"):
        evaluate_case(labels, labels, (1, 1, 1), labels=[14])
    assert list(evaluate_case(labels, labels, (1, 1, 1), labels=[2, 5])["DSC"]) == [2, 5]


# --- folders and command line -----------------------------------------------------------------------------------

def _write_xyz(array: np.ndarray, path, spacing=(0.8, 0.8, 2.5), direction=None) -> None:
    """Write an (x, y, z) array as NIfTI: SimpleITK takes (z, y, x)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)).astype(np.uint8))
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def test_folders_and_command_line(tmp_path, capsys):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir(), pred_dir.mkdir()
    case = np.zeros((16, 16, 10), np.uint8)
    case[2:8, 2:8, 2:8] = LIVER
    case[10:14, 10:14, 3:6] = AORTA
    _write_xyz(case, ref_dir / "a.nii.gz")
    _write_xyz(case, ref_dir / "b.nii.gz")
    eroded = case.copy()
    eroded[2, 2:8, 2:8] = 0
    _write_xyz(eroded, pred_dir / "a.nii.gz")  # b has no prediction

    summary = evaluate_folders(ref_dir, pred_dir, progress=False)
    assert summary["num_cases"] == 2 and summary["missing_predictions"] == ["b.nii.gz"]
    liver_a = summary["per_case"][0]["DSC"]["liver"]
    assert liver_a == 2 * 180 / (216 + 180)  # unrounded in the summary
    assert summary["per_case"][1]["mean_DSC"] == pytest.approx(11 / 13)
    assert summary["per_organ"]["DSC"]["liver"] == pytest.approx(liver_a / 2)
    assert summary["rules"]["nsd_zero_below_dsc"] == 0.2

    out = tmp_path / "summary.json"
    evaluate_main(["-ref", str(ref_dir), "-pred", str(pred_dir), "-o", str(out), "-l", "1", "5"])
    written = json.loads(out.read_text())
    assert list(written["per_organ"]["DSC"]) == [FLARE_ORGANS[LIVER], FLARE_ORGANS[AORTA]]
    assert written["per_case"][0]["DSC"]["liver"] == liver_a  # JSON keeps every digit
    printed = capsys.readouterr().out
    mean_liver = written["per_organ"]["DSC"]["liver"]
    assert f"{mean_liver:.4f}" in printed and str(mean_liver) not in printed  # the table rounds to 4 decimals
    assert "missing prediction" in printed

    _write_xyz(case, pred_dir / "b.nii.gz", spacing=(1.0, 1.0, 1.0))
    assert evaluate_main(["-ref", str(ref_dir), "-pred", str(pred_dir)]) == 2
    err = capsys.readouterr().err
    assert "spacing" in err and len(err.strip().splitlines()) == 1  # one line


@pytest.mark.parametrize("direction", [(-1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0), (0, 0, 1.0, 1.0, 0, 0, 0, 1.0, 0)])
def test_folder_slice_range_follows_the_third_array_axis_whatever_the_header(tmp_path, direction):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir(), pred_dir.mkdir()
    ref = box((12, 12, 14), (4, 4, 3), (8, 8, 9)).astype(np.uint8) * AORTA
    pred = ref.copy()
    pred[:, :, 8] = 0  # the last labelled slice of the third axis: not scored
    pred[:, :, 10:13] = pred[:, :, 4:7]  # beyond the range: not scored
    spacing = (0.57, 0.57, 1.6)  # not exact in binary: the metric must use the header's 32-bit values
    _write_xyz(ref, ref_dir / "c.nii.gz", spacing, direction)
    _write_xyz(pred, pred_dir / "c.nii.gz", spacing, direction)
    case = evaluate_folders(ref_dir, pred_dir, labels=[AORTA], progress=False)["per_case"][0]
    assert case["DSC"]["aorta"] == case["NSD"]["aorta"] == 1.0

    pred[:, :, 3] = 0  # the first labelled slice is scored
    _write_xyz(pred, pred_dir / "c.nii.gz", spacing, direction)
    case = evaluate_folders(ref_dir, pred_dir, labels=[AORTA], progress=False)["per_case"][0]
    float32_spacing = tuple(float(s) for s in np.float32(spacing))
    expected = evaluate_case(ref, pred, float32_spacing, labels=[AORTA])
    assert case["DSC"]["aorta"] == expected["DSC"][AORTA] < 1.0
    assert case["NSD"]["aorta"] == expected["NSD"][AORTA]


def test_help_states_the_deliberate_differences():
    text = build_parser().format_help()
    for phrase in ("scored as an empty prediction", "refused", "single reference slice", "0.2", "unrounded"):
        assert phrase in " ".join(text.split()), phrase


def test_foreground_agreement_counts_the_union_of_foregrounds() -> None:
    from nnunetv2_flare.evaluation.metrics import foreground_agreement
    a = np.array([0, 0, 1, 2, 3, 3])
    b = np.array([0, 1, 1, 2, 0, 4])
    assert foreground_agreement(a, b) == (2, 5)  # voxels 1..5 are foreground in either; 2 and 3 agree
    assert foreground_agreement(np.zeros(4), np.zeros(4)) == (0, 0)
