"""Step 4 of a round: preprocessed data in line with the new labels, without re-planning.

For every configuration of the plans whose data folder exists (the organ configuration and the locator; the narrow
organ configuration shares the organ data), a staged copy of the folder is filled: unchanged cases are hard links to
the current files, changed cases are preprocessed again by the configuration's own preprocessor (`run_case_save`,
so `case.b2nd`, `case_seg.b2nd` and the sampling locations in `case.pkl` come out exactly as in a full
preprocessing run). The plans, and so their normalization statistics, are read and never written. The locator's
data are regenerated for changed cases too: its target (label > 0) changes with any gained or lost organ voxel and
its preprocessing is cheap. `gt_segmentations/` (what nnU-Net's validation compares against) is staged the same way
with copies of the new labels.

A staged case is complete once its `.pkl` is in place: the three files are written under temporary names and the
`.pkl` renamed last, so a rerun after an interruption redoes only incomplete cases.
"""
from __future__ import annotations

import os
import pydoc
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterable

from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from tqdm import tqdm

import nnunetv2_flare
from nnunetv2_flare.atomic_io import TMP_PREFIX, atomic_path, remove_stale_temporaries
from nnunetv2_flare.pseudolabel.dataset_state import GT_FOLDER, FlareDataset
from nnunetv2_flare.pseudolabel.rounds import staged_preprocessed_folder

CASE_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")  # the .pkl last: its presence marks a complete case


def find_preprocessor_class(configuration: ConfigurationManager) -> type:
    """The class that made the configuration's training data: the plans' `flare_training_preprocessor` (FlarePlans
    name nnU-Net's DefaultPreprocessor for inference and this package's class for training data), else
    `preprocessor_name` as a dotted path, a class of this package's planning module, or nnU-Net's."""
    if "flare_training_preprocessor" in configuration.configuration:
        from nnunetv2_flare.planning.preprocessors import training_preprocessor_class
        return training_preprocessor_class(configuration.configuration)
    name = configuration.preprocessor_name
    if "." in name:
        cls = pydoc.locate(name)
    else:
        planning = Path(nnunetv2_flare.__file__).parent / "planning"
        cls = recursive_find_python_class(str(planning), name, "nnunetv2_flare.planning") \
            if planning.is_dir() else None
        if cls is None:
            cls = configuration.preprocessor_class
    if cls is None:
        raise RuntimeError(f"preprocessor {name!r} of configuration not found in nnunetv2_flare.planning nor in "
                           f"nnunetv2.preprocessing")
    return cls


def link_or_copy(source: Path, target: Path) -> None:
    """Hard link (free, and the staged folder replaces the source anyway); copy where links are not supported."""
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)


def _case_complete(folder: Path, case: str) -> bool:
    return (folder / f"{case}.pkl").is_file()


def preprocess_case(preprocessor, staged: Path, case: str, image_files: list[Path], label_file: Path,
                    plans_manager: PlansManager, configuration: ConfigurationManager, dataset_json: dict) -> None:
    """Run the configuration's preprocessing on one case, written into `staged` with a rename per file."""
    tmp = staged / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{case}"
    try:
        preprocessor.run_case_save(str(tmp), [str(f) for f in image_files], str(label_file), plans_manager,
                                   configuration, dataset_json)
        for suffix in CASE_SUFFIXES:
            os.replace(f"{tmp}{suffix}", staged / f"{case}{suffix}")
    finally:
        for suffix in CASE_SUFFIXES:
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def stage_configuration(dataset: FlareDataset, round_: int, identifier: str, configuration_name: str,
                        changed: set[str], labels_folder: Path, progress: bool = True,
                        on_case: Callable[[str], None] | None = None) -> Path:
    """Fill the staged copy of one preprocessed data folder; returns it."""
    live = dataset.preprocessed / identifier
    staged = staged_preprocessed_folder(dataset, identifier, round_)
    staged.mkdir(exist_ok=True)
    remove_stale_temporaries(staged)
    plans_manager = dataset.plans_manager()
    configuration = plans_manager.get_configuration(configuration_name)
    preprocessor = find_preprocessor_class(configuration)(verbose=False)
    dataset_json = dataset.dataset_json()
    case_files = {f"{c}{s}" for c in dataset.cases for s in CASE_SUFFIXES}
    for f in live.iterdir():  # anything that is not a case's data (none in nnU-Net 2.8.1) goes along unchanged
        if f.is_file() and f.name not in case_files and not f.name.startswith(TMP_PREFIX) \
                and not (staged / f.name).exists():
            link_or_copy(f, staged / f.name)
    todo = [c for c in dataset.cases if not _case_complete(staged, c)]
    for case in tqdm(todo, desc=f"preprocessing {identifier}", disable=not progress or not todo):
        if case in changed:
            preprocess_case(preprocessor, staged, case, dataset.images[case], dataset.label_file(case, labels_folder),
                            plans_manager, configuration, dataset_json)
        else:
            for suffix in CASE_SUFFIXES:
                link_or_copy(live / f"{case}{suffix}", staged / f"{case}{suffix}")
        if on_case is not None:
            on_case(case)
    return staged


def stage_gt_segmentations(dataset: FlareDataset, round_: int, changed: set[str], labels_folder: Path) -> Path:
    """Copies, never links, of changed labels: nnU-Net overwrites gt_segmentations files in place when it
    preprocesses, which would reach through a hard link into labelsTr."""
    live = dataset.preprocessed / GT_FOLDER
    staged = staged_preprocessed_folder(dataset, GT_FOLDER, round_)
    staged.mkdir(exist_ok=True)
    remove_stale_temporaries(staged)
    for case in dataset.cases:
        target = dataset.label_file(case, staged)
        if target.exists():
            continue
        if case in changed:
            with atomic_path(target) as tmp:
                shutil.copyfile(dataset.label_file(case, labels_folder), tmp)
        else:
            link_or_copy(dataset.label_file(case, live), target)
    return staged


def stage_abdomen_references(dataset: FlareDataset, round_: int, foreground_changed: set[str],
                             labels_folder: Path) -> Path | None:
    """The locator's binarized references (`gt_segmentations_abdomen/`, written by the planning step), if present."""
    from nnunetv2_flare.planning.abdomen_labels import ABDOMEN_REFERENCE_FOLDER, binarize

    live = dataset.preprocessed / ABDOMEN_REFERENCE_FOLDER
    if not live.is_dir():
        return None
    staged = staged_preprocessed_folder(dataset, ABDOMEN_REFERENCE_FOLDER, round_)
    staged.mkdir(exist_ok=True)
    remove_stale_temporaries(staged)
    rw = dataset.plans_manager().image_reader_writer_class()
    for case in dataset.cases:
        target = dataset.label_file(case, staged)
        if target.exists():
            continue
        if case in foreground_changed or not dataset.label_file(case, live).is_file():
            seg, properties = rw.read_seg(str(dataset.label_file(case, labels_folder)))
            with atomic_path(target) as tmp:
                rw.write_seg(binarize(seg[0]).astype("uint8"), str(tmp), properties)
        else:
            link_or_copy(dataset.label_file(case, live), target)
    return staged


def depends_on_foreground_only(preprocessor_class: type) -> bool:
    """The locator's data see only label > 0: a case needs new locator data only if its abdomen mask changed."""
    try:
        from nnunetv2_flare.planning.preprocessors import FlareLocatorPreprocessor
    except ImportError:
        return False
    return issubclass(preprocessor_class, FlareLocatorPreprocessor)


def stage_preprocessed(dataset: FlareDataset, round_: int, changed: Iterable[str], labels_folder: Path,
                       foreground_changed: Iterable[str] | None = None, progress: bool = True,
                       on_case: Callable[[str], None] | None = None) -> list[str]:
    """Stage every preprocessed folder of the round; returns the folder names to switch (gt_segmentations last).

    `foreground_changed`: the cases whose label > 0 mask changed (default: all changed cases)."""
    changed = set(changed)
    foreground_changed = changed if foreground_changed is None else set(foreground_changed)
    names = []
    plans_manager = dataset.plans_manager()
    for identifier, configuration_name in dataset.preprocessed_configurations().items():
        cls = find_preprocessor_class(plans_manager.get_configuration(configuration_name))
        needs = foreground_changed if depends_on_foreground_only(cls) else changed
        stage_configuration(dataset, round_, identifier, configuration_name, needs, labels_folder, progress,
                            on_case)
        names.append(identifier)
    abdomen = stage_abdomen_references(dataset, round_, foreground_changed, labels_folder)
    if abdomen is not None:
        names.append(abdomen.name[1:].rsplit(f"_round{round_}", 1)[0])
    stage_gt_segmentations(dataset, round_, changed, labels_folder)
    return names
