"""follow_organs: growing the locator's box where the organ labels reach its faces (box_following.py)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings, strategies as st

from cascade_oracles import LabelOracle, predictor_from_networks
from nnunetv2_flare.inference.core.box_following import (
    extension_slabs,
    grow_box,
    half_patch_voxels,
    outside_mask,
    relative,
    touched_faces,
)
from nnunetv2_flare.inference.geometry import Box
from nnunetv2_flare.inference.models.loading import CTNormalization
from nnunetv2_flare.inference.predictor import FlareCascadePredictor

SHAPE = (60, 40, 40)  # z, y, x; 2 mm voxels
TUBE_TOP = 58  # the "aorta" runs from z 12 up to here, far above the "liver" the locator finds


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.0))
    return image


def _case() -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """CT, organ labels, and what a weak locator finds: the liver and the tube's lower part only."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[14:30, 12:16, 12:16] = 1
    labels[12:TUBE_TOP, 18:22, 25:29] = 5
    located = labels.copy()
    located[30:] = 0
    # what the slabs find beyond the box without continuing an organ of it must be dropped: a stray piece of "aorta",
    # and a "liver" larger than the box's (a largest-component rule would keep it and drop the box's liver)
    labels[40:43, 2:5, 2:5] = 5
    labels[33:40, 10:17, 10:31] = 1
    ct = np.where(labels > 0, 100, -900).astype(np.int16)
    return _image(ct), _image(labels), _image(located)


class ChangesItsMind(LabelOracle):
    """Labels the liver 13 from its `after`-th tile on: what the follow slabs say about voxels of the first box (their
    context) shows up if the merge takes it."""

    def __init__(self, reference: sitk.Image, after: int) -> None:
        super().__init__(reference)
        self.after = after

    def __call__(self, x: np.ndarray, grid) -> np.ndarray:
        labels = super().__call__(x, grid)
        if len(self.grids) > self.after:
            labels[labels == 1] = 13
        return labels


def _predictor(labels: sitk.Image, located: sitk.Image, organs: LabelOracle | None = None,
               **options) -> FlareCascadePredictor:
    norm = CTNormalization(-1000.0, 1000.0, 0.0, 200.0)
    return predictor_from_networks(
        LabelOracle(located, binary=True), organs or LabelOracle(labels), norm, norm, locator_size=(32, 32, 32),
        organ_patch_size=(16, 16, 16), organ_spacing=(2.0, 2.0, 2.0), margin_mm=4.0, min_component_side=1,
        orientation=None, progress=False, **options)


def test_follow_organs_labels_what_the_locator_cut_and_keeps_the_box_as_it_was() -> None:
    ct, labels, located = _case()
    reference = sitk.GetArrayFromImage(labels)
    plain = _predictor(labels, located).run(ct)
    box = plain.crop_box
    assert box.stop[0] < TUBE_TOP and plain.located_box is None
    out = {rounds: _predictor(labels, located, follow_organs=rounds).run(ct) for rounds in (1, 4)}
    arrays = {rounds: sitk.GetArrayFromImage(r.labels) for rounds, r in out.items()}
    plain_labels = sitk.GetArrayFromImage(plain.labels)
    for rounds, result in out.items():
        # what the locator's box held is unchanged; the tube goes on above it, half a patch (8 voxels) per round
        np.testing.assert_array_equal(arrays[rounds][box.slices], plain_labels[box.slices])
        assert result.located_box == box and result.crop_box.stop[0] == min(SHAPE[0], box.stop[0] + 8 * rounds)
        assert result.n_patches > plain.n_patches
        report = result.to_report()["crop_box"]
        assert report["grown_from"]["stop_xyz"][2] == box.stop[0] and report["stop_xyz"][2] == result.crop_box.stop[0]
    tube = (reference == 5) & (np.arange(SHAPE[0])[:, None, None] < TUBE_TOP)
    tube[:, :10] = False  # the stray piece
    assert (arrays[4][tube] == 5).all()  # the whole tube after 4 rounds (the 4th reaches the scan's edge)
    assert ((arrays[4] == 1) == ((reference == 1) & (np.arange(SHAPE[0])[:, None, None] < 30))).all()
    for rounds in (1, 4):
        assert (arrays[rounds][40:43, 2:5, 2:5] == 0).all() and (arrays[rounds][33:40, 10:17] == 0).all()
    assert (arrays[1] == 5).sum() < (arrays[4] == 5).sum() == tube.sum()
    # the slabs' context inside the first box is only context
    fickle = _predictor(labels, located, ChangesItsMind(labels, after=plain.n_patches), follow_organs=4).run(ct)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(fickle.labels), arrays[4])
    # nothing reaches a face: following changes nothing
    whole = _predictor(labels, labels).run(ct)
    assert whole.located_box is None


def test_follow_organs_is_a_number_of_rounds() -> None:
    _, labels, located = _case()
    with pytest.raises(ValueError, match="follow_organs"):
        _predictor(labels, located, follow_organs=-1)
    with pytest.raises(ValueError, match="follow_organs"):
        _predictor(labels, located, follow_organs=1.5)
    assert _predictor(labels, located, follow_organs=2).settings()["follow_organs"] == 2


def test_touched_faces_skip_the_scan_edge() -> None:
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0, 2, 2] = 1  # low z face
    labels[2, 4, 3] = 2  # high y face
    assert touched_faces(labels, Box((3, 0, 0), (7, 5, 6)), (10, 10, 10)) == [(0, 0), (1, 1)]
    assert touched_faces(labels, Box((0, 0, 0), (4, 5, 6)), (10, 10, 10)) == [(1, 1)]  # z starts at the edge
    assert touched_faces(labels, Box((0, 5, 0), (4, 10, 6)), (10, 10, 10)) == []


def test_half_a_patch_in_input_voxels() -> None:
    assert half_patch_voxels((96, 96, 96), (2.0, 1.5, 1.5), (2.5, 0.8, 0.8)) == (39, 90, 90)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.integers(1, 12)] * 3), st.tuples(*[st.integers(0, 12)] * 3),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1)), min_size=1, max_size=6, unique=True),
       st.tuples(*[st.integers(1, 6)] * 3), st.tuples(*[st.integers(1, 6)] * 3))
def test_extension_slabs_cover_everything_grown(size, start, faces, step, context) -> None:
    volume = (30, 30, 30)
    old = Box(start, tuple(s + n for s, n in zip(start, size)))
    grown = grow_box(old, faces, step, volume)
    assert all(0 <= a <= b <= c <= d <= v for a, b, c, d, v in zip(grown.start, old.start, old.stop, grown.stop,
                                                                       volume))
    covered = np.zeros(grown.shape, bool)
    for slab in extension_slabs(old, grown, faces, context):
        assert all(g0 <= s0 and s1 <= g1 for g0, s0, s1, g1 in zip(grown.start, slab.start, slab.stop, grown.stop))
        covered[relative(slab, grown)] |= outside_mask(slab, old)
    expected = outside_mask(grown, old)
    np.testing.assert_array_equal(covered, expected)
