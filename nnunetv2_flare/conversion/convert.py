"""`convert_flare_release`: a FLARE release folder to one nnU-Net raw dataset (the API of nnUNetv2_flare_convert).

The dataset holds what the paper trains and scores on:
- imagesTr/labelsTr: the labelled cases and the pseudo-labelled ones (their labels are round 0 of the
  pseudo-label rounds);
- imagesTs/labelsTs: the validation cases with released labels;
- dataset.json (FLARE's 13 organs), trusted_cases.txt (the labelled cases: `nnUNetv2_flare_pseudolabel --trusted`)
  and flare_conversion.json (the report: every case, where it came from and how its label was matched).

The source is only read. Files are copied, or linked (`link=True`: symbolic links to the source files; this
package's tools replace files and never write into them, so the links stay read-only in use). Every file is written
under a temporary name and renamed; dataset.json comes last, so a dataset without it is unfinished and the same
call resumes it, skipping what is already there.
"""
from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunetv2_flare.atomic_io import TMP_PREFIX, atomic_path, atomic_write, remove_stale_temporaries, write_json_atomic
from nnunetv2_flare.conversion.case_matching import (
    FILE_ENDING,
    MATCH_RULES,
    CaseMatchError,
    list_case_files,
    match_cases,
)
from nnunetv2_flare.conversion.layouts import LABELLED, LayoutError, ReleaseLayout, recognise_layout
from nnunetv2_flare.inference.inputs.reading import CHANNEL_SUFFIX
from nnunetv2_flare.labels import flare_dataset_json

T, R = TypeVar("T"), TypeVar("R")
REPORT = "flare_conversion.json"
TRUSTED_CASES = "trusted_cases.txt"
CONVERTING, COMPLETE = "converting", "complete"
GRID_MISMATCH = "label grid differs from the image's"
UNREADABLE = "image or label unreadable"
DEFECTS = (GRID_MISMATCH, UNREADABLE)  # reasons a case is left out that make the command exit 1


@dataclass(frozen=True)
class PlannedCase:
    set_name: str
    split: str                  # "Tr" or "Ts"
    case: str
    image: Path
    label: Path | None
    rule: str | None            # how the label was matched (case_matching.MATCH_RULES)

    def files(self, folder: Path) -> list[tuple[Path, Path]]:
        """(source, destination) of the image and, if any, the label."""
        pairs = [(self.image, folder / f"images{self.split}" / f"{self.case}{CHANNEL_SUFFIX}{FILE_ENDING}")]
        if self.label is not None:
            pairs.append((self.label, folder / f"labels{self.split}" / f"{self.case}{FILE_ENDING}"))
        return pairs


@dataclass
class ConversionPlan:
    layout: ReleaseLayout
    cases: list[PlannedCase]
    left_out: list[dict] = field(default_factory=list)          # {"set", "image", "reason"}
    unmatched_labels: list[dict] = field(default_factory=list)  # {"set", "label"}
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict]:
        """Per set: images found, cases converted, labels matched per rule, images left out, labels unused."""
        out: dict[str, dict] = {}
        for s in self.layout.sets:
            entry = out.setdefault(s.name, {"images": 0, "converted": 0, "with_label": 0,
                                            "matched_by": {rule: 0 for rule in MATCH_RULES}, "left_out": 0,
                                            "unmatched_labels": 0})
            entry["images"] += sum(len(list_case_files(f)) for f in s.image_folders)
        for c in self.cases:
            out[c.set_name]["converted"] += 1
            if c.label is not None:
                out[c.set_name]["with_label"] += 1
                out[c.set_name]["matched_by"][c.rule] += 1
        for entry in self.left_out:
            out[entry["set"]]["left_out"] += 1
        for entry in self.unmatched_labels:
            out[entry["set"]]["unmatched_labels"] += 1
        return out

    @property
    def trusted_cases(self) -> list[str]:
        return [c.case for c in self.cases if c.set_name == LABELLED]

    @property
    def num_training(self) -> int:
        return sum(c.split == "Tr" for c in self.cases)


@dataclass
class ConversionResult:
    folder: Path
    plan: ConversionPlan
    written: int = 0            # files written by this call
    kept: int = 0               # files already in place (a resumed or repeated call)
    failed: dict[str, str] = field(default_factory=dict)  # case -> error
    complete: bool = False


def threaded(function: Callable[[T], R], items: Sequence[T], num_threads: int, desc: str,
             progress: bool) -> Iterator[R]:
    """`function` over `items` on `num_threads` threads, results in order, with a progress bar. On an exception
    (Ctrl-C included) the items not started are cancelled: only the files being written are finished."""
    pool = ThreadPoolExecutor(max(1, num_threads))
    try:
        yield from tqdm(pool.map(function, items), total=len(items), desc=desc, disable=not progress)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _grid(path: Path) -> tuple:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()  # the header only
    return reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()


def grid_problem(image: Path, label: Path) -> tuple[str | None, str | None]:
    """(why the label cannot train with the image, a warning), from the headers: nnU-Net refuses a size or spacing
    mismatch and only warns about origin and direction (verify_dataset_integrity); so does this check. A file ITK
    cannot read is a reason too."""
    try:
        (size, spacing, origin, direction), (lsize, lspacing, lorigin, ldirection) = _grid(image), _grid(label)
    except RuntimeError as e:  # ITK's error for a file it cannot read
        return f"{UNREADABLE}: {' '.join(str(e).split())[-160:]}", None
    if size != lsize or not np.allclose(spacing, lspacing):
        return (f"{GRID_MISMATCH}: image {size} voxels of {tuple(round(s, 4) for s in spacing)} mm, label {lsize} "
                f"of {tuple(round(s, 4) for s in lspacing)} mm"), None
    if not (np.allclose(origin, lorigin) and np.allclose(direction, ldirection)):
        return None, f"{label.name}: origin or direction differs from {image.name} (kept, as nnU-Net does)"
    return None, None


def plan_conversion(layout: ReleaseLayout, num_threads: int = 4, progress: bool = True) -> ConversionPlan:
    """Match every set's images and labels and check each pair's grid (headers only). Refuses (LayoutError) an
    image without a label where one is required, and two files that claim the same case."""
    plan = ConversionPlan(layout, [])
    missing: list[str] = []
    for s in layout.sets:
        images = [f for folder in s.image_folders for f in list_case_files(folder)]
        labels = [f for folder in s.label_folders for f in list_case_files(folder)]
        try:
            matches, unused = match_cases(images, labels)
        except CaseMatchError as e:
            raise LayoutError(f"{s.name} set: {e}") from None
        plan.unmatched_labels += [{"set": s.name, "label": str(f.path)} for f in unused]
        for m in matches:
            if m.label is None and s.labels_required:
                missing.append(str(m.image))
            elif m.label is None and s.split == "Tr":
                plan.left_out.append({"set": s.name, "image": str(m.image), "reason": "no label"})
            else:
                plan.cases.append(PlannedCase(s.name, s.split, m.case, m.image, m.label, m.rule))
    if missing:
        folders = {str(f) for s in layout.sets if s.labels_required for f in s.label_folders}
        raise LayoutError(f"{len(missing)} image(s) have no label where one is required, e.g. {missing[0]} (looked "
                          f"in {', '.join(sorted(folders))}; by name, with _0000, and by case number)")
    seen: dict[str, PlannedCase] = {}
    for c in plan.cases:
        if c.case in seen:
            raise LayoutError(f"case {c.case} is in the {seen[c.case].set_name} set ({seen[c.case].image}) and in "
                              f"the {c.set_name} set ({c.image}); the dataset can hold it once")
        seen[c.case] = c
    pairs = [c for c in plan.cases if c.label is not None]
    checks = list(threaded(lambda c: grid_problem(c.image, c.label), pairs, num_threads, "checking grids", progress))
    bad = set()
    for c, (problem, warning) in zip(pairs, checks):
        if problem:
            bad.add(c.case)
            plan.left_out.append({"set": c.set_name, "image": str(c.image), "reason": problem})
        if warning:
            plan.warnings.append(warning)
    plan.cases = [c for c in plan.cases if c.case not in bad]
    return plan


def _up_to_date(source: Path, destination: Path, link: bool) -> bool:
    """Files are renamed into place whole, so an existing one is a finished copy (or link) of its source."""
    if link:
        return destination.is_symlink() and os.readlink(destination) == str(source)
    return (destination.is_file() and not destination.is_symlink()
            and destination.stat().st_size == source.stat().st_size)


def place_file(source: Path, destination: Path, link: bool) -> bool:
    """Copy (or link) `source` to `destination` atomically; False when it was already there."""
    if _up_to_date(source, destination, link):
        return False
    if link:
        with atomic_path(destination) as tmp:
            os.symlink(source, tmp)
    else:
        atomic_write(destination, lambda tmp: shutil.copyfile(source, tmp))
    return True


def _settings(layout: ReleaseLayout, folder: Path, link: bool) -> dict:
    return {"source": str(layout.root), "layout": layout.name, "pseudo_labels": layout.pseudo_labels,
            "link": link, "dataset": folder.name}


def _output_root(output_folder: str | os.PathLike | None) -> Path:
    if output_folder is not None:
        return Path(output_folder).resolve()
    if not os.environ.get("nnUNet_raw"):
        raise LayoutError("nnUNet_raw is not set: export it (nnU-Net's raw data folder) or give -o FOLDER")
    return Path(os.environ["nnUNet_raw"]).resolve()


def _check_destination(output_root: Path, folder: Path, dataset_id: int, layout: ReleaseLayout) -> None:
    if folder.is_relative_to(layout.root) or layout.root.is_relative_to(folder):
        raise LayoutError(f"the dataset {folder} would lie inside the release {layout.root} (or hold it); write it "
                          f"elsewhere (-o): the source is never changed")
    if output_root.is_dir():
        others = [p.name for p in output_root.glob(f"Dataset{dataset_id:03d}_*") if p.name != folder.name]
        if others:
            raise LayoutError(f"{output_root} already holds {others[0]} with id {dataset_id}; nnU-Net finds datasets "
                              f"by id: choose a free -d")


def _dataset_state(folder: Path, settings: dict) -> str | None:
    """None for a new dataset; CONVERTING / COMPLETE for one this command started with the same settings."""
    if not folder.exists() or not any(folder.iterdir()):
        return None
    report = folder / REPORT
    if not report.is_file():
        raise LayoutError(f"{folder} exists and was not written by nnUNetv2_flare_convert; choose another -d or "
                          f"--name, or remove it")
    previous = json.loads(report.read_text())
    if previous.get("settings") != settings:
        changed = sorted(k for k in settings if previous.get("settings", {}).get(k) != settings[k])
        raise LayoutError(f"{folder} was converted with other settings ({', '.join(changed)}); convert into another "
                          f"dataset (-d / --name) or remove it first")
    return previous.get("state")


def _foreign_files(folder: Path, plan: ConversionPlan) -> list[Path]:
    expected = {dst for c in plan.cases for _, dst in c.files(folder)}
    found = [p for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") if (folder / sub).is_dir()
             for p in (folder / sub).iterdir() if not p.name.startswith(TMP_PREFIX)]
    return sorted(p for p in found if p not in expected)


def report_json(plan: ConversionPlan, settings: dict, state: str) -> dict:
    root = plan.layout.root

    def rel(p: Path | None) -> str | None:
        return None if p is None else str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    return {"state": state, "settings": settings, "counts": plan.counts(),
            "not_converted": list(plan.layout.not_converted), "left_out": plan.left_out,
            "unmatched_labels": plan.unmatched_labels, "warnings": plan.warnings,
            "cases": [{"case": c.case, "set": c.set_name, "split": c.split, "image": rel(c.image),
                       "label": rel(c.label), "match": c.rule} for c in plan.cases]}


def convert_flare_release(source: str | os.PathLike, dataset_id: int, output_folder: str | os.PathLike | None = None,
                          dataset_name: str | None = None, pseudo_labels: Sequence[str] | None = None,
                          link: bool = False, num_threads: int = 4, progress: bool = True,
                          dry_run: bool = False) -> ConversionResult:
    """Convert the release in `source` into `<output_folder or $nnUNet_raw>/Dataset<id>_<name>`.

    `pseudo_labels`: the pseudo-labelled set's labels: for FLARE24 Task 2 'aladdin5' (default, FLARE22's winner) or
    'blackbean' (its runner-up); for any release one or more folders of label files; 'none' leaves the set out.
    `dry_run`: recognise, match and check, write nothing. Raises LayoutError (a one-line refusal) before writing
    anything when the folder is no FLARE release, a required label is missing or the dataset folder is taken."""
    layout = recognise_layout(source, pseudo_labels)
    output_root = _output_root(output_folder)
    folder = output_root / f"Dataset{int(dataset_id):03d}_{dataset_name or layout.dataset_name}"
    _check_destination(output_root, folder, int(dataset_id), layout)
    settings = _settings(layout, folder, link)
    state = _dataset_state(folder, settings)
    plan = plan_conversion(layout, num_threads, progress)
    result = ConversionResult(folder, plan)
    if dry_run:
        return result
    if state == COMPLETE:  # a finished dataset may hold later rounds' labels: never written again
        result.kept, result.complete = sum(len(c.files(folder)) for c in plan.cases), True
        return result
    foreign = _foreign_files(folder, plan)
    if foreign:
        raise LayoutError(f"{folder} holds {len(foreign)} file(s) this conversion does not write, e.g. {foreign[0]}; "
                          f"remove them or convert into another dataset")
    for split in {c.split for c in plan.cases}:
        for kind in ("images", "labels"):
            (folder / f"{kind}{split}").mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(folder / f"{kind}{split}")
    write_json_atomic(report_json(plan, settings, CONVERTING), folder / REPORT)

    def place(case: PlannedCase) -> tuple[PlannedCase, int, int, str | None]:
        written = kept = 0
        try:
            for src, dst in case.files(folder):
                if place_file(src, dst, link):
                    written += 1
                else:
                    kept += 1
        except OSError as e:
            return case, written, kept, f"{type(e).__name__}: {e}"
        return case, written, kept, None

    for case, written, kept, error in threaded(place, plan.cases, num_threads, "linking" if link else "copying",
                                               progress):
        result.written += written
        result.kept += kept
        if error:
            result.failed[case.case] = error
    if result.failed:
        return result
    if plan.trusted_cases:
        atomic_write(folder / TRUSTED_CASES,
                     lambda tmp: tmp.write_text("".join(f"{case}\n" for case in plan.trusted_cases)))
    counts = {name: {k: v for k, v in entry.items() if k in ("converted", "with_label")}
              for name, entry in plan.counts().items()}
    write_json_atomic(flare_dataset_json(
        folder.name.split("_", 1)[1],
        f"{layout.name} release converted by nnUNetv2_flare_convert (pseudo-labels: {layout.pseudo_labels}); "
        f"the labelled cases are listed in {TRUSTED_CASES}, every case's source in {REPORT}",
        plan.num_training, FILE_ENDING,
        flare_release={"layout": layout.name, "source": str(layout.root), "pseudo_labels": layout.pseudo_labels,
                       "sets": counts, "trusted_cases": TRUSTED_CASES if plan.trusted_cases else None}),
        folder / "dataset.json")
    write_json_atomic(report_json(plan, settings, COMPLETE), folder / REPORT)
    result.complete = True
    return result
