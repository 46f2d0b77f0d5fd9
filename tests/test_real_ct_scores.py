"""tools/real_ct_scores.py: references mapped to FLARE's ids, only the organs a reference labels are scored."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from tool_modules import load_tool

real_ct_scores = load_tool("real_ct_scores")


def _image(array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_ircadb_codes_become_flare_ids_and_only_labelled_organs_count(tmp_path) -> None:
    codes = np.zeros((8, 16, 16), np.int16)
    codes[2:6, 2:8, 2:8] = 449   # liver
    codes[2:6, 10:14, 2:6] = 129  # left kidney
    codes[0:2, :, :] = 65         # bone: not a FLARE organ
    sitk.WriteImage(_image(codes), str(tmp_path / "ref.nii.gz"))
    case = real_ct_scores.RealCase("tiny", tmp_path / "ct.nii.gz", tmp_path / "ref.nii.gz", (1, 13),
                                   real_ct_scores.IRCADB_TO_FLARE)
    reference = real_ct_scores.flare_reference(case)
    mapped = sitk.GetArrayFromImage(reference)
    assert set(np.unique(mapped)) == {0, 1, 13} and (mapped == 1).sum() == 4 * 6 * 6
    prediction = mapped.copy()
    prediction[2:4, 2:8, 2:8] = 0      # half the liver missed
    prediction[6:8, 0:4, 0:4] = 11     # a stomach the reference does not label: not scored
    scores = real_ct_scores.score(reference, _image(prediction.astype(np.uint8)), case.organs)
    assert set(scores["DSC"]) == {1, 13}
    assert scores["DSC"][1] == pytest.approx(2 * 72 / (144 + 72))
    assert scores["DSC"][13] == 1.0
    assert scores["mean_DSC"] == pytest.approx((2 * 72 / 216 + 1) / 2)


def test_the_cases_point_at_the_shared_real_scans() -> None:
    cases = {c.name: c for c in real_ct_scores.real_cases()}
    assert cases["3dircadb_patient1"].organs == (1, 2, 3, 5, 6, 13)
    assert 10 not in cases["totalsegmentator_example_ct"].organs  # no esophagus in its field of view
    for case in cases.values():
        assert case.image.exists() and case.reference.exists(), f"{case.image}: ../shared/data/real is missing"


def test_where_organs_went_tells_missed_from_mislabelled_and_misplaced() -> None:
    reference = np.zeros((8, 16, 16), np.uint8)
    reference[2:6, 2:8, 2:8] = 2      # right kidney, 144 voxels
    reference[2:6, 10:14, 10:14] = 3  # spleen, 64 voxels
    prediction = np.zeros_like(reference)
    prediction[2:6, 2:5, 2:8] = 2     # half the kidney found, the rest missed
    prediction[2:6, 10:14, 10:12] = 11  # half the spleen called stomach
    prediction[2:6, 10:14, 12:14] = 3
    rows = real_ct_scores.where_organs_went(_image(reference), _image(prediction), (2, 3))
    assert rows[2]["predicted_as"] == {2: 0.5, 0: 0.5} and rows[2]["precision"] == 1.0
    assert rows[3]["predicted_as"] == {11: 0.5, 3: 0.5}
    # the found half of the kidney lies 1.5 voxels (1 mm spacing in y) before the reference's centroid
    assert rows[2]["centroid_offset_mm_xyz"] == [0.0, -1.5, 0.0]
    text = real_ct_scores.explain(rows)
    assert "right_kidney: " in text and "missed 50%" in text and "stomach 50%" in text
