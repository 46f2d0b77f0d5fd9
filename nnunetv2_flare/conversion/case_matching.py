"""Which label file belongs to which image, matched by case the way FLARE's releases name their files.

An image `Case_00001_0000.nii.gz` is the case `Case_00001` (nnU-Net's channel suffix dropped). Its label is found by
the first rule that applies, and the rule is recorded with the match:
- `same name`: `Case_00001.nii.gz`;
- `channel suffix`: `Case_00001_0000.nii.gz` (a label saved under its image's name);
- `case number`: the same prefix and the same number written differently, `Case1.nii.gz` or `case_1.nii.gz`
  (FLARE24's release names the first nine FLARE22 pseudo-labels of aladdin5 `Case1` ... `Case9`).
Names are compared by prefix (letters and digits, case and `_`/`-` ignored) and number (leading zeros ignored), so
`FLARE22_Tr_0001` and `FLARE22Tr1` are one case, while `Case_00001` and `FLARETs_0001` are not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from nnunetv2_flare.inference.inputs.reading import CHANNEL_SUFFIX

FILE_ENDING = ".nii.gz"  # every FLARE release ships gzipped NIfTI
IGNORED_FOLDERS = ("__MACOSX",)  # macOS archive metadata in FLARE24's pseudo-label archives
SAME_NAME, CHANNEL, NUMBER = "same name", "channel suffix", "case number"
MATCH_RULES = (SAME_NAME, CHANNEL, NUMBER)
_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)$")


class CaseMatchError(ValueError):
    """Two files claim the same case; the message names both."""


@dataclass(frozen=True)
class CaseFile:
    path: Path
    case: str               # the file name without the ending and without nnU-Net's channel suffix
    had_channel_suffix: bool

    @property
    def key(self) -> tuple[str, int] | str:
        return case_key(self.case)


@dataclass(frozen=True)
class Match:
    case: str               # the image's case name: the name written to the nnU-Net dataset
    image: Path
    label: Path | None
    rule: str | None        # one of MATCH_RULES, None without a label


def case_file(path: Path) -> CaseFile:
    stem = path.name[: -len(FILE_ENDING)]
    if stem.endswith(CHANNEL_SUFFIX):
        return CaseFile(path, stem[: -len(CHANNEL_SUFFIX)], True)
    return CaseFile(path, stem, False)


def case_key(case: str) -> tuple[str, int] | str:
    """(prefix, number) of a numbered case name, e.g. ('case', 1) for Case1 and Case_00001; the lower-cased name
    itself for a name without a trailing number."""
    match = _NUMBERED.match(case)
    if not match:
        return case.lower()
    return re.sub(r"[_\-]", "", match["prefix"]).lower(), int(match["number"])


def list_case_files(folder: Path) -> list[CaseFile]:
    """The .nii.gz files directly in `folder`, sorted; hidden files (`.name`, macOS `._name`) left out."""
    return [case_file(p) for p in sorted(folder.iterdir())
            if p.name.endswith(FILE_ENDING) and not p.name.startswith(".") and p.is_file()]


def _unique(files: Iterable[CaseFile], key, what: str) -> dict:
    found: dict = {}
    for f in files:
        k = key(f)
        if k in found:
            raise CaseMatchError(f"{found[k].path} and {f.path} are the same {what}; remove one of them")
        found[k] = f
    return found


def match_cases(images: Sequence[CaseFile], labels: Sequence[CaseFile]) -> tuple[list[Match], list[CaseFile]]:
    """Each image with its label (or None) and the rule that matched them; then the labels no image claimed."""
    _unique(images, lambda f: f.key, "case (image)")
    by_name = _unique(labels, lambda f: (f.case, f.had_channel_suffix), "label")
    by_key: dict = {}
    for f in labels:
        by_key.setdefault(f.key, []).append(f)
    matches, used = [], set()
    for image in images:
        label, rule = by_name.get((image.case, False)), SAME_NAME
        if label is None:
            label, rule = by_name.get((image.case, True)), CHANNEL
        if label is None:
            candidates = [f for f in by_key.get(image.key, []) if f.path not in used]
            if len(candidates) > 1:
                raise CaseMatchError(f"{image.path.name}: {candidates[0].path} and {candidates[1].path} are both "
                                     f"labels of case {image.case}; remove one of them")
            label, rule = (candidates[0], NUMBER) if candidates else (None, None)
        if label is not None:
            if label.path in used:
                raise CaseMatchError(f"{label.path} would label two images, one of them {image.path.name}; rename "
                                     f"one of the images")
            used.add(label.path)
        matches.append(Match(image.case, image.path, label.path if label else None, rule))
    return matches, [f for f in labels if f.path not in used]
