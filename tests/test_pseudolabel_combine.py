"""The combining rule of the pseudo-label rounds on small hand-made arrays."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from nnunetv2_flare.pseudolabel.combine import (
    PAPER_PRIORITY,
    PAPER_WRITE_ORDER,
    combine_labels,
    priority_from_write_order,
    voxel_changes,
)

LIVER, R_KIDNEY, SPLEEN, PANCREAS, AORTA, IVC, R_ADRENAL, L_ADRENAL, GALLBLADDER, ESOPHAGUS, STOMACH, DUODENUM, \
    L_KIDNEY = range(1, 14)


def algorithm_1(d_init: np.ndarray, d_inf: np.ndarray, write_order=PAPER_WRITE_ORDER) -> np.ndarray:
    """The paper's Algorithm 1 written literally: masked writes in order, later writes win."""
    d_new = np.zeros_like(d_init)
    for c in write_order:
        d_new[(d_init == c) | (d_inf == c)] = c
    return d_new


def test_paper_priority_matches_the_paper_text():
    assert PAPER_PRIORITY == (L_ADRENAL, GALLBLADDER, ESOPHAGUS, L_KIDNEY, DUODENUM, STOMACH, R_ADRENAL, IVC, AORTA,
                              PANCREAS, SPLEEN, R_KIDNEY, LIVER)


def test_union_per_class_fills_gaps_and_keeps_both_sides():
    current = np.array([[LIVER, 0, 0, SPLEEN, 0]], dtype=np.uint8)
    predicted = np.array([[LIVER, LIVER, 0, 0, AORTA]], dtype=np.uint8)
    out = combine_labels(current, predicted)
    np.testing.assert_array_equal(out, [[LIVER, LIVER, 0, SPLEEN, AORTA]])
    assert out.dtype == np.uint8


@pytest.mark.parametrize("winner, loser", [
    (GALLBLADDER, STOMACH),      # the paper's motivation: stomach must not swallow the gallbladder
    (L_ADRENAL, L_KIDNEY),       # left kidney vs left adrenal
    (ESOPHAGUS, STOMACH),        # stomach vs esophagus at the cardia
    (GALLBLADDER, DUODENUM),
    (ESOPHAGUS, DUODENUM),
    (L_KIDNEY, STOMACH),         # 13 written after 11 in the union pass
    (DUODENUM, PANCREAS),
    (IVC, LIVER),
])
def test_paper_priority_pairs_in_either_direction(winner, loser):
    a = np.array([winner, loser], dtype=np.uint8)
    b = np.array([loser, winner], dtype=np.uint8)
    np.testing.assert_array_equal(combine_labels(a, b), [winner, winner])
    np.testing.assert_array_equal(combine_labels(b, a), [winner, winner])


def test_combining_a_label_with_itself_changes_nothing():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 14, size=(6, 7, 8)).astype(np.uint8)
    np.testing.assert_array_equal(combine_labels(label, label), label)
    once = combine_labels(label, rng.integers(0, 14, size=label.shape).astype(np.uint8))
    np.testing.assert_array_equal(combine_labels(once, once), once)


def test_custom_priority_reverses_a_paper_decision():
    current = np.array([STOMACH, GALLBLADDER, 0], dtype=np.int16)
    predicted = np.array([GALLBLADDER, STOMACH, STOMACH], dtype=np.int16)
    stomach_first = (STOMACH, *[c for c in PAPER_PRIORITY if c != STOMACH])
    np.testing.assert_array_equal(combine_labels(current, predicted, stomach_first), [STOMACH, STOMACH, STOMACH])
    np.testing.assert_array_equal(combine_labels(current, predicted), [GALLBLADDER, GALLBLADDER, STOMACH])


def test_custom_priority_for_other_label_sets():
    current = np.array([1, 2, 0, 3], dtype=np.uint8)
    predicted = np.array([2, 1, 3, 0], dtype=np.uint8)
    np.testing.assert_array_equal(combine_labels(current, predicted, (1, 2, 3)), [1, 1, 3, 3])
    np.testing.assert_array_equal(combine_labels(current, predicted, (3, 2, 1)), [2, 2, 3, 3])


def test_priority_from_write_order():
    assert priority_from_write_order([1, 2, 3]) == (3, 2, 1)
    assert priority_from_write_order([1, 2, 3, 1]) == (1, 3, 2)
    with pytest.raises(ValueError, match="positive"):
        priority_from_write_order([0, 1])


def test_invalid_inputs_are_refused_with_a_reason():
    a = np.zeros((2, 2), np.uint8)
    with pytest.raises(ValueError, match="shape"):
        combine_labels(a, np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="not in the priority list"):
        combine_labels(a, np.full((2, 2), 5, np.uint8), priority=(1, 2))
    with pytest.raises(ValueError, match="repeated"):
        combine_labels(a, a, priority=(1, 1))
    with pytest.raises(TypeError, match="integer"):
        combine_labels(a.astype(np.float32), a)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint8, (3, 4, 5), elements=st.integers(0, 13)),
       hnp.arrays(np.uint8, (3, 4, 5), elements=st.integers(0, 13)))
def test_matches_algorithm_1_written_literally(d_init, d_inf):
    np.testing.assert_array_equal(combine_labels(d_init, d_inf), algorithm_1(d_init, d_inf))


@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.uint8, (20,), elements=st.integers(0, 13)),
       hnp.arrays(np.uint8, (20,), elements=st.integers(0, 13)),
       st.permutations(list(range(1, 14))))
def test_any_priority_list_matches_its_write_order(d_init, d_inf, priority):
    write_order = list(reversed(priority))
    np.testing.assert_array_equal(combine_labels(d_init, d_inf, priority), algorithm_1(d_init, d_inf, write_order))
    assert priority_from_write_order(write_order) == tuple(priority)


def test_voxel_changes_counts_gains_and_losses():
    old = np.array([1, 1, 0, 2, 2, 9], dtype=np.uint8)
    new = np.array([1, 2, 1, 2, 0, 9], dtype=np.uint8)
    changes = voxel_changes(old, new)
    assert changes[1] == {"gained": 1, "lost": 1}
    assert changes[2] == {"gained": 1, "lost": 1}
    assert changes[9] == {"gained": 0, "lost": 0}
    assert set(changes) == set(range(1, 14))
