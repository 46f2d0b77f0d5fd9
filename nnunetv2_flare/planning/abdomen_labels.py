"""The locator's two-class problem: background / abdomen, where abdomen is the union of all organs (labels > 0).

The dataset on disk keeps its 14 classes; the locator sees a reduced copy of dataset.json and binarized labels.
"""
from __future__ import annotations

import os
from copy import deepcopy
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunetv2_flare.atomic_io import atomic_path

ABDOMEN_LABELS: dict[str, int] = {"background": 0, "abdomen": 1}

# next to nnU-Net's gt_segmentations/ in the preprocessed dataset folder; the locator validates against it
ABDOMEN_REFERENCE_FOLDER = "gt_segmentations_abdomen"


def abdomen_dataset_json(dataset_json: dict) -> dict:
    """dataset.json of the locator: same channels, files and cases, labels reduced to background / abdomen."""
    if "regions_class_order" in dataset_json:
        raise ValueError("region-based dataset.json files are not supported by the FLARE locator: its labels must "
                         "be plain integer classes (0 = background, > 0 = organ)")
    reduced = deepcopy(dataset_json)
    reduced["labels"] = dict(ABDOMEN_LABELS)
    return reduced


def binarize(segmentation: np.ndarray) -> np.ndarray:
    """Any organ -> 1. Negative values (nnU-Net's 'outside the nonzero mask' marker) are kept as they are."""
    out = np.where(segmentation > 0, 1, segmentation)
    return out.astype(np.int8 if out.min() >= -128 else np.int16, copy=False)


def write_abdomen_references(source_folder: str | os.PathLike, target_folder: str | os.PathLike,
                             reader_writer_class: type, file_ending: str, show_progress: bool = True) -> list[Path]:
    """Binarize every reference in `source_folder` into `target_folder` where the target is missing or older than
    its source (labels may be replaced, e.g. by pseudo-labelling rounds). Returns the files written."""
    source_folder, target_folder = Path(source_folder), Path(target_folder)
    target_folder.mkdir(parents=True, exist_ok=True)
    written = []
    sources = sorted(p for p in source_folder.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))
    rw = reader_writer_class()
    for src in tqdm(sources, desc="Binarizing references for the locator", disable=not show_progress):
        dst = target_folder / src.name
        if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        seg, properties = rw.read_seg(str(src))
        with atomic_path(dst) as tmp:
            rw.write_seg(binarize(seg[0]).astype(np.uint8), str(tmp), properties)
        written.append(dst)
    return written
