"""The folder layouts of FLARE's public releases, and which one a folder is (docs/conversion.md lists where
each was read).

- FLARE24 Task 2 (`FLARE-Task2-LaptopSeg`): `train_gt_label/{imagesTr,labelsTr}` (50 expert-labelled cases),
  `train_pseudo_label/imagesTr` (2,000 FLARE22 unlabelled cases) with the organisers' pseudo-labels of the FLARE22
  winner in `flare22_aladdin5_pseudo` and the runner-up in `pseudo_label_blackbean_flare22` (shipped as the
  archives `pseudo_label_aladdin5_flare22.7z` and `pseudo_label_blackbean_flare22.zip`),
  `validation/Validation-Public-Images` with `Validation-Public-Labels`, and `validation/Validation-Hidden-Images`
  (no labels released).
- FLARE22: `Training/FLARE22_LabeledCase50/{images,labels}`, `Training/FLARE22_UnlabeledCase1-1000` and
  `...1001-2000` (no labels), `Validation/` (images).
- FLARE23: `imagesTr2200` with `labelsTr2200` (partial organ labels plus a lesion class 14), `unlabeledTr1800`,
  `validation/`.

A layout is a list of sets: which folders hold the images, which the labels, where they go in the nnU-Net dataset
(imagesTr/labelsTr or imagesTs/labelsTs) and whether every image must have a label.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from nnunetv2_flare.errors import UsageError

LABELLED, PSEUDO, VALIDATION = "labelled", "pseudo-labelled", "validation"
ARCHIVE_ENDINGS = (".zip", ".7z", ".tar.gz", ".tgz", ".tar")
NO_PSEUDO_LABELS = "none"
# FLARE24 Task 2's pseudo-label sources: name -> (folder inside train_pseudo_label, the archive it is shipped in)
FLARE24_PSEUDO_LABELS = {
    "aladdin5": ("flare22_aladdin5_pseudo", "pseudo_label_aladdin5_flare22.7z"),    # FLARE22's winner
    "blackbean": ("pseudo_label_blackbean_flare22", "pseudo_label_blackbean_flare22.zip"),  # its runner-up
}
DEFAULT_FLARE24_PSEUDO_LABELS = "aladdin5"  # the paper trains on the winner's labels


class LayoutError(UsageError):
    """The folder is no FLARE release this converter knows, or a folder it needs is missing (exit 2)."""


@dataclass(frozen=True)
class ReleaseSet:
    name: str                          # LABELLED, PSEUDO or VALIDATION
    split: str                         # "Tr": imagesTr/labelsTr; "Ts": imagesTs/labelsTs
    image_folders: tuple[Path, ...]
    label_folders: tuple[Path, ...]    # empty: no labels (images alone go to imagesTs; a Tr set is then skipped)
    labels_required: bool              # an image without a label is refused; otherwise it is left out and listed


@dataclass(frozen=True)
class ReleaseLayout:
    name: str                          # e.g. "FLARE24 Task 2"
    dataset_name: str                  # the default name of the nnU-Net dataset
    root: Path
    sets: tuple[ReleaseSet, ...]
    pseudo_labels: str                 # where the pseudo-labelled set's labels come from (a name, folders, "none")
    not_converted: tuple[str, ...] = field(default=())  # what the release holds that is not converted, and why


def existing_folder(path: Path, what: str) -> Path:
    """`path` if it is a folder; otherwise a refusal that says to extract the archive lying next to it, if any."""
    if path.is_dir():
        return path
    archives = [p.name for p in sorted(path.parent.glob(f"{path.name}*")) if p.name.endswith(ARCHIVE_ENDINGS)]
    if archives:
        raise LayoutError(f"{what} {path} is still packed in {archives[0]}: extract it there first "
                          f"(7z x / unzip into {path.parent})")
    raise LayoutError(f"{what} {path} is missing; download it with the release, or check -i")


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.glob("*.nii.gz") if not p.name.startswith("."))


def _pseudo_label_folders(pseudo_labels: Sequence[str], named: dict[str, tuple[str, str]], base: Path,
                          release: str) -> tuple[Path, ...]:
    """The folders of `--pseudo_labels`: names of the release's own sources (FLARE24) or folder paths."""
    folders = []
    for value in pseudo_labels:
        if value in named:
            folder, archive = named[value]
            if not (base / folder).is_dir() and (base / archive).is_file():
                raise LayoutError(f"--pseudo_labels {value}: {base / archive} is not extracted yet: extract it into "
                                  f"{base} (it holds {folder}/)")
            folders.append(existing_folder(base / folder, f"--pseudo_labels {value}:"))
        elif Path(value).is_dir():
            folders.append(Path(value).resolve())
        else:
            names = f"one of {', '.join(named)}, " if named else ""
            raise LayoutError(f"--pseudo_labels {value}: not a folder; give {names}a folder of label files, or "
                              f"{NO_PSEUDO_LABELS} ({release})")
    return tuple(folders)


def _validation_sets(images: Path, labels: Path | None) -> list[ReleaseSet]:
    if not images.is_dir():
        return []
    label_folders = (labels,) if labels is not None and labels.is_dir() else ()
    return [ReleaseSet(VALIDATION, "Ts", (images,), label_folders, bool(label_folders))]


def flare24_task2(root: Path, pseudo_labels: Sequence[str] | None) -> ReleaseLayout | None:
    gt = root / "train_gt_label"
    if not (gt / "imagesTr").is_dir():
        return None
    sets = [ReleaseSet(LABELLED, "Tr", (gt / "imagesTr",), (existing_folder(gt / "labelsTr", "the label folder"),),
                       True)]
    notes = []
    pseudo_base = root / "train_pseudo_label"
    pseudo_labels = list(pseudo_labels or [DEFAULT_FLARE24_PSEUDO_LABELS])
    if (pseudo_base / "imagesTr").is_dir():
        if pseudo_labels == [NO_PSEUDO_LABELS]:
            notes.append(f"{pseudo_base / 'imagesTr'}: {_count_images(pseudo_base / 'imagesTr')} images left out "
                         f"(--pseudo_labels {NO_PSEUDO_LABELS})")
        else:
            sets.append(ReleaseSet(PSEUDO, "Tr", (pseudo_base / "imagesTr",),
                                   _pseudo_label_folders(pseudo_labels, FLARE24_PSEUDO_LABELS, pseudo_base,
                                                         "FLARE24 Task 2"), True))
    validation = root / "validation"
    sets += _validation_sets(validation / "Validation-Public-Images", validation / "Validation-Public-Labels")
    hidden = validation / "Validation-Hidden-Images"
    if hidden.is_dir():
        notes.append(f"{hidden}: {_count_images(hidden)} images without released labels, not converted (predict "
                     f"them from that folder)")
    return ReleaseLayout("FLARE24 Task 2", "FLARE24", root, tuple(sets), ", ".join(pseudo_labels), tuple(notes))


def flare22(root: Path, pseudo_labels: Sequence[str] | None) -> ReleaseLayout | None:
    training = root / "Training"
    labelled = sorted(p for p in training.glob("*LabeledCase50") if p.is_dir()) if training.is_dir() else []
    if not labelled:
        return None
    sets = [ReleaseSet(LABELLED, "Tr", (existing_folder(labelled[0] / "images", "the image folder"),),
                       (existing_folder(labelled[0] / "labels", "the label folder"),), True)]
    notes = []
    unlabelled = tuple(sorted(p for p in training.glob("*UnlabeledCase*") if p.is_dir()))
    pseudo_labels = list(pseudo_labels or [NO_PSEUDO_LABELS])
    if unlabelled:
        if pseudo_labels == [NO_PSEUDO_LABELS]:
            notes.append(f"{', '.join(p.name for p in unlabelled)}: {sum(map(_count_images, unlabelled))} "
                         f"unlabelled images left out (give --pseudo_labels FOLDER, e.g. FLARE24 Task 2's "
                         f"train_pseudo_label/flare22_aladdin5_pseudo, to train on them)")
        else:
            sets.append(ReleaseSet(PSEUDO, "Tr", unlabelled,
                                   _pseudo_label_folders(pseudo_labels, {}, training, "FLARE22"), True))
    validation = root / "Validation"
    images = validation / "images" if (validation / "images").is_dir() else validation
    sets += _validation_sets(images, validation / "labels")
    return ReleaseLayout("FLARE22", "FLARE22", root, tuple(sets), ", ".join(pseudo_labels), tuple(notes))


def flare23(root: Path, pseudo_labels: Sequence[str] | None) -> ReleaseLayout | None:
    partial = root / "imagesTr2200"
    if not partial.is_dir():
        return None
    if not pseudo_labels or list(pseudo_labels) == [NO_PSEUDO_LABELS]:
        raise LayoutError(f"{root} is FLARE23: its labelsTr2200 label some organs per case and add a lesion class "
                          f"(14), so they cannot train the 13-organ networks; give --pseudo_labels FOLDER with "
                          f"13-organ labels of its images")
    folders = _pseudo_label_folders(pseudo_labels, {}, root, "FLARE23")
    sets = [ReleaseSet(PSEUDO, "Tr", (partial,), folders, True)]
    unlabelled = [p for p in (root / "unlabeledTr1800", root / "unlabelTr1800") if p.is_dir()]
    if unlabelled:  # pseudo-labels are often made for the 2,200 only: those of the 1,800 are taken where present
        sets.append(ReleaseSet(PSEUDO, "Tr", (unlabelled[0],), folders, False))
    sets += _validation_sets(root / "validation", None)
    notes = (f"{root / 'labelsTr2200'}: partial labels with a lesion class, not used (the pseudo-labels replace "
             f"them)",)
    return ReleaseLayout("FLARE23", "FLARE23", root, tuple(sets), ", ".join(pseudo_labels), notes)


LAYOUTS: dict[str, tuple[Callable[[Path, Sequence[str] | None], ReleaseLayout | None], str]] = {
    "FLARE24 Task 2": (flare24_task2, "train_gt_label/imagesTr"),
    "FLARE22": (flare22, "Training/FLARE22_LabeledCase50/images"),
    "FLARE23": (flare23, "imagesTr2200"),
}


def recognise_layout(root: str | Path, pseudo_labels: Sequence[str] | None = None) -> ReleaseLayout:
    """The layout of the release in `root`; a one-line refusal when it is none of FLARE's (with the subfolder to
    give instead, when the release lies one level down)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise LayoutError(f"-i {root} is not a folder; give the top folder of a FLARE release")
    for recognise, _ in LAYOUTS.values():
        layout = recognise(root, pseudo_labels)
        if layout is not None:
            return layout
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for name, (_, marker) in LAYOUTS.items():
            if (sub / marker).is_dir():
                raise LayoutError(f"-i {root} is not a FLARE release, but {sub} is ({name}): give -i {sub}")
    expected = "; ".join(f"{name}: {marker}/" for name, (_, marker) in LAYOUTS.items())
    raise LayoutError(f"-i {root} matches none of FLARE's release layouts (looked for {expected}); give the "
                      f"release's top folder")
