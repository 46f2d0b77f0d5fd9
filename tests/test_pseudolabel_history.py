"""Every round's labels as their own version: labelsTr checked against the journal, going back to a round, keeping
hand edits as a round, the journal of an earlier version, and the messages a round gives as it goes."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunetv2_flare.pseudolabel import rounds
from nnunetv2_flare.pseudolabel.dataset_state import DatasetStateError, FlareDataset, check_dataset_consistency
from nnunetv2_flare.pseudolabel.label_versions import file_digest
from nnunetv2_flare.pseudolabel.manual_rounds import record_edits, restore_round
from nnunetv2_flare.pseudolabel.run_round import run_pseudolabel_round
from test_pseudolabel_rounds import (
    CASES,
    LIVER,
    SETTINGS,
    SHAPE,
    SPLEEN,
    TRUSTED,
    FakeOrganModel,
    _label,
    _write,
    assert_consistent_round,
    expected_label,
    make_dataset,
    read,
    run,
    snapshot,
)

DUODENUM = 12


@pytest.fixture()
def dataset(tmp_path: Path) -> FlareDataset:
    return make_dataset(tmp_path)


def labels_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.nii.gz"))}


def round_labels(dataset: FlareDataset, k: int) -> dict[str, np.ndarray]:
    return {c: read(rounds.history_labels_folder(dataset, k) / f"{c}.nii.gz") for c in CASES}


class DuodenumIntoStomach(FakeOrganModel):
    """Paints duodenum over part of the stomach (duodenum wins by the paper's priority)."""

    def full_prediction(self) -> np.ndarray:
        pred = np.zeros(SHAPE, np.uint8)
        pred[9:12, 15:19, 18:22] = DUODENUM
        return pred


def two_rounds(dataset: FlareDataset) -> None:
    """Round 1 fills the liver gap and adds a gallbladder; round 2 turns part of the stomach into duodenum."""
    run(dataset, FakeOrganModel())
    result = run_pseudolabel_round(dataset, DuodenumIntoStomach, dict(SETTINGS, model="second-model"),
                                   trusted=TRUSTED, progress=False)
    assert sorted(result.changed_cases) == CASES[1:]


def test_each_round_is_its_own_folder_recorded_in_the_journal(dataset: FlareDataset):
    originals = labels_of(dataset.labels_folder)
    two_rounds(dataset)
    assert labels_of(rounds.history_labels_folder(dataset, 0)) == originals
    assert labels_of(rounds.history_labels_folder(dataset, 2)) == labels_of(dataset.labels_folder)
    assert labels_of(rounds.history_labels_folder(dataset, 1)) != labels_of(dataset.labels_folder)
    journal = rounds.load_journal(dataset)
    assert [(r["round"], r["kind"], r["state"]) for r in journal["rounds"]] == [
        (0, "original", "done"), (1, "pseudolabel", "done"), (2, "pseudolabel", "done")]
    for record in journal["rounds"]:
        folder = rounds.history_labels_folder(dataset, record["round"])
        assert record["labels"] == {c: file_digest(folder / f"{c}.nii.gz") for c in CASES}
    # labelsTr is a copy, not the round's folder: editing it leaves the history as it was
    assert not dataset.labels_folder.is_symlink()
    assert dataset.label_file(CASES[1]).stat().st_ino != \
        (rounds.history_labels_folder(dataset, 2) / f"{CASES[1]}.nii.gz").stat().st_ino


def test_the_old_docs_go_back_by_cp_is_refused_in_one_line_naming_the_round(dataset: FlareDataset):
    """What docs/pseudolabel.md used to say: copy round 1 over labelsTr and re-run the preprocessing. The next round
    must not take it for round 2 (before, it saved round 1's copies as round 2 and credited round 2's model)."""
    two_rounds(dataset)
    for f in rounds.history_labels_folder(dataset, 1).iterdir():
        shutil.copy(f, dataset.labels_folder / f.name)
        shutil.copy(f, dataset.preprocessed / "gt_segmentations" / f.name)  # as the re-preprocessing would
    before = snapshot(dataset.raw, dataset.preprocessed)
    for dry_run in (True, False):
        with pytest.raises(DatasetStateError) as refused:
            run(dataset, FakeOrganModel(), dry_run=dry_run)
        message = str(refused.value)
        assert "\n" not in message
        assert "is not round 2 as pseudolabel_rounds.json records it: 3 changed (tiny_001, tiny_002, tiny_003)" \
               in message and "it holds exactly the labels of round 1" in message
        assert "--restore_round J" in message and "--record_edits" in message
    assert snapshot(dataset.raw, dataset.preprocessed) == before
    assert "differs from round 2: 3 changed" in rounds.describe_rounds(dataset)


@pytest.mark.parametrize("edit, named", [
    ("change", "1 changed (tiny_002)"),
    ("delete", "1 missing (tiny_002)"),
])
def test_any_edit_of_labelsTr_is_named_before_a_round(dataset: FlareDataset, edit: str, named: str):
    run(dataset, FakeOrganModel())
    if edit == "change":
        label = read(dataset.label_file(CASES[2]))
        label[0, 0, 0] = SPLEEN
        _write(label, dataset.label_file(CASES[2]))
    else:
        dataset.label_file(CASES[2]).unlink()
    with pytest.raises(DatasetStateError, match=f"is not round 1 as .* records it: {re.escape(named)}"):
        run(dataset, FakeOrganModel())


def test_restore_goes_back_to_a_round_as_a_new_round(dataset: FlareDataset):
    two_rounds(dataset)
    round1, round2 = labels_of(rounds.history_labels_folder(dataset, 1)), labels_of(dataset.labels_folder)
    messages: list[str] = []
    result = restore_round(dataset, 1, progress=False, on_message=messages.append)
    assert result.round == 3 and messages == []
    assert labels_of(dataset.labels_folder) == round1 == labels_of(rounds.history_labels_folder(dataset, 3))
    assert labels_of(rounds.history_labels_folder(dataset, 2)) == round2  # later rounds stay
    assert_consistent_round(dataset, round_labels(dataset, 1))
    assert sorted(result.changed_cases) == CASES[1:]
    assert result.report["totals"]["per_organ"]["stomach"]["gained"] > 0  # round 2 had taken stomach voxels
    record = rounds.load_journal(dataset)["rounds"][-1]
    assert (record["kind"], record["settings"], record["state"]) == ("restore", {"restored_round": 1}, "done")
    assert "round 3: round 1's labels restored" in rounds.describe_rounds(dataset)
    # going back to where we are does nothing; the next pseudo-label round builds on round 1's labels
    assert restore_round(dataset, 3, progress=False) is None
    model = FakeOrganModel()
    assert run(dataset, model).round == 4 and model.calls
    expected = {c: expected_label(i, model) for i, c in enumerate(CASES)}
    expected[TRUSTED[0]] = _label(0)
    assert_consistent_round(dataset, expected)


def test_restore_keeps_labels_no_round_recorded(dataset: FlareDataset):
    originals = labels_of(dataset.labels_folder)
    run(dataset, FakeOrganModel())
    edited = read(dataset.label_file(CASES[3]))
    edited[0, 0, 0] = SPLEEN
    _write(edited, dataset.label_file(CASES[3]))
    edited_bytes = dataset.label_file(CASES[3]).read_bytes()
    messages: list[str] = []
    assert restore_round(dataset, 0, progress=False, on_message=messages.append).round == 2
    kept = [p for p in dataset.raw.iterdir() if p.name.startswith("labelsTr_unrecorded_")]
    assert len(kept) == 1 and (kept[0] / f"{CASES[3]}.nii.gz").read_bytes() == edited_bytes
    assert str(kept[0]) in messages[0] and "1 changed (tiny_003)" in messages[0]
    assert labels_of(dataset.labels_folder) == originals
    assert_consistent_round(dataset, {c: _label(i) for i, c in enumerate(CASES)})


def test_restore_remakes_preprocessed_data_that_went_missing(dataset: FlareDataset):
    run(dataset, FakeOrganModel())
    shutil.rmtree(dataset.preprocessed / "gt_segmentations")
    (dataset.preprocessed / "FlarePlans_flare_organs" / f"{CASES[0]}.b2nd").unlink()  # a trusted, unchanged case
    assert restore_round(dataset, 0, progress=False).round == 2
    assert_consistent_round(dataset, {c: _label(i) for i, c in enumerate(CASES)})


def test_restore_refuses_a_round_that_is_not_there_or_was_edited(dataset: FlareDataset):
    with pytest.raises(DatasetStateError, match="no round 0 to go back to: the rounds recorded are none"):
        restore_round(dataset, 0, progress=False)
    run(dataset, FakeOrganModel())
    with pytest.raises(DatasetStateError, match=r"no round 5 to go back to: the rounds recorded are \[0, 1\]"):
        restore_round(dataset, 5, progress=False)
    history = rounds.history_labels_folder(dataset, 0)
    shutil.copy(dataset.label_file(CASES[1]), history / f"{CASES[1]}.nii.gz")
    before = snapshot(dataset.raw, dataset.preprocessed)
    with pytest.raises(DatasetStateError, match=r"labelsTr_round0 no longer holds round 0 .* 1 changed \(tiny_001\)"):
        restore_round(dataset, 0, progress=False)
    assert snapshot(dataset.raw, dataset.preprocessed) == before


def test_hand_edits_become_a_round_and_the_preprocessed_data_follow(dataset: FlareDataset):
    run(dataset, FakeOrganModel())
    assert record_edits(dataset, progress=False) is None  # nothing edited
    edited = read(dataset.label_file(CASES[2]))
    edited[15:18, 15:20, 4:8] = LIVER
    _write(edited, dataset.label_file(CASES[2]))  # edited, not preprocessed again
    with pytest.raises(DatasetStateError, match="1 changed"):
        run(dataset, FakeOrganModel())
    result = record_edits(dataset, progress=False)
    assert result.round == 2 and result.changed_cases == [CASES[2]]
    assert result.report["cases"][CASES[2]]["per_organ"]["liver"]["gained"] == 3 * 5 * 4
    expected = round_labels(dataset, 1)
    expected[CASES[2]] = edited
    assert_consistent_round(dataset, expected)
    np.testing.assert_array_equal(read(rounds.history_labels_folder(dataset, 2) / f"{CASES[2]}.nii.gz"), edited)
    assert rounds.load_journal(dataset)["rounds"][-1]["kind"] == "edits"
    assert run(dataset, FakeOrganModel()).round == 3


def test_hand_edits_that_cannot_be_a_round_are_refused(dataset: FlareDataset):
    with pytest.raises(DatasetStateError, match="no round of .* is recorded yet"):
        record_edits(dataset, progress=False)
    run(dataset, FakeOrganModel())
    edited = read(dataset.label_file(CASES[1]))
    edited[0, 0, 0] = 14
    _write(edited, dataset.label_file(CASES[1]))
    dataset.label_file(CASES[2]).unlink()
    before = snapshot(dataset.raw, dataset.preprocessed)
    with pytest.raises(DatasetStateError, match=r"tiny_002: label .* missing; tiny_001: label values \[14\] are not"):
        record_edits(dataset, progress=False)
    assert snapshot(dataset.raw, dataset.preprocessed) == before


def test_a_round_from_the_checkpoint_of_the_previous_round_warns(dataset: FlareDataset):
    said: list[str] = []
    settings = dict(SETTINGS, model_digest="abc")
    run_pseudolabel_round(dataset, FakeOrganModel, settings, trusted=TRUSTED, progress=False, on_message=said.append)
    assert said == []
    result = run_pseudolabel_round(dataset, FakeOrganModel, settings, trusted=TRUSTED, progress=False,
                                   on_message=said.append)
    assert said == result.messages and len(said) == 1
    assert said[0].startswith("warning: round 1 was made with this very model") and "Fine-tune first" in said[0]
    said.clear()
    run_pseudolabel_round(dataset, FakeOrganModel, dict(settings, model_digest="def"), trusted=TRUSTED,
                          progress=False, on_message=said.append)
    assert said == []


def test_a_continued_round_says_so_before_it_predicts(dataset: FlareDataset):
    events: list[tuple[str, str]] = []

    class Recorded(FakeOrganModel):
        def __call__(self, image, box):
            events.append(("predict", ""))
            return super().__call__(image, box)

    with pytest.raises(KeyboardInterrupt):
        run(dataset, Recorded(), after_case=lambda s, c: c == CASES[2] and (_ for _ in ()).throw(KeyboardInterrupt()))
    events.clear()
    run(dataset, Recorded(), on_message=lambda m: events.append(("message", m)))
    assert events[0] == ("message", "continuing round 1 from state 'started' (3 of 4 cases done before the "
                                    "interruption are kept)")
    assert events[1:] == [("predict", "")]


def test_a_priority_with_a_label_the_dataset_lacks_is_refused(dataset: FlareDataset):
    with pytest.raises(DatasetStateError, match=r"names \[14\], which the dataset does not have"):
        run_pseudolabel_round(dataset, FakeOrganModel, SETTINGS, priority=[*range(1, 14), 14], progress=False)
    assert not dataset.journal_path.exists()


def test_every_problem_of_the_preprocessed_data_is_its_own_clause(dataset: FlareDataset):
    shutil.rmtree(dataset.preprocessed / "gt_segmentations")
    for folder in ("FlarePlans_flare_organs", "FlarePlans_flare_locator"):
        shutil.rmtree(dataset.preprocessed / folder)
    with pytest.raises(DatasetStateError, match="gt_segmentations is missing; no preprocessed configuration"):
        check_dataset_consistency(dataset)


def test_a_journal_of_the_earlier_format_is_upgraded(dataset: FlareDataset):
    """Format 1 kept the current round only in labelsTr: it becomes labelsTr_round1, digests are recorded."""
    run(dataset, FakeOrganModel())
    journal = json.loads(dataset.journal_path.read_text())
    shutil.rmtree(rounds.history_labels_folder(dataset, 1))
    old = {"format": 1, "current_round": 1, "rounds": [{k: v for k, v in journal["rounds"][1].items()
                                                         if k not in ("kind", "labels")}]}
    dataset.journal_path.write_text(json.dumps(old))
    upgraded = rounds.load_journal(dataset)
    assert upgraded["format"] == 2 and [r["kind"] for r in upgraded["rounds"]] == ["original", "pseudolabel"]
    assert upgraded["rounds"][1]["labels"] == journal["rounds"][1]["labels"]
    assert labels_of(rounds.history_labels_folder(dataset, 1)) == labels_of(dataset.labels_folder)
    assert run(dataset, FakeOrganModel()).round == 2
