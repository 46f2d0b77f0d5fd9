"""The two-phase CPU cascade: locate the abdomen on the whole CT at 128^3, segment the crop at organ spacing.

Steps (../shared/docs/method.md):
1. Phase 1: resize the whole volume to the locator's input (128^3) first, then normalize (cheap on the small volume),
   locator forward, argmax; drop foreground components smaller than 20 x 20 x 20 voxels of the original grid (that
   volume converted to the 128^3 grid). The bounding box is computed at 128^3 and mapped onto the original grid,
   so nothing is ever upsampled to full size.
2. Crop on the original grid with a margin (default 15 mm per side: a 128^3 voxel of a 512 x 512 x 200 CT at
   0.78 x 0.78 x 2.5 mm is 3-4 mm, so the margin covers the locator's coarseness several times over and gives the
   organ network context at the box's faces; it rarely adds a tile). Nothing found: warn, use the whole volume.
3. Phase 2: resample only the crop to the organ spacing (trilinear), normalize, pad to at least one patch,
   sliding window (fewest tiles, see sliding_window.py), argmax at working resolution.
4. Largest connected component per organ at working resolution; labels back to the crop's original grid by
   nearest neighbour; pasted into a zero volume with exactly the input's geometry (uint8).
Arrays are used as read (nnU-Net's convention, no reorientation); each network's transpose_forward is applied
inside its model wrapper. Orientation is therefore the input's, by construction.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn
from tqdm import tqdm

from nnunetv2_flare.atomic_io import remove_stale_temporaries, write_image_atomic, write_json_atomic
from nnunetv2_flare.inference.geometry import (Box, VoxelGrid, box_from_coarse, resize_linear, resize_nearest,
                                               resize_offset_and_scale, working_shape)
from nnunetv2_flare.inference.image_io import list_cases, read_image
from nnunetv2_flare.inference.model_loading import (CHECKPOINT, CTNormalization, NetworkModel, Phase,
                                                    SegmentationModel, load_phase)
from nnunetv2_flare.inference.postprocessing import (foreground_bounds, keep_largest_component_per_label,
                                                     remove_small_components)
from nnunetv2_flare.inference.sliding_window import sliding_window_labels, tile_count
from nnunetv2_flare.labels import FLARE_ORGANS, NUM_CLASSES

DEFAULT_MARGIN_MM = 15.0
MIN_COMPONENT_SIDE = 20  # voxels of the original grid (method.md: components smaller than 20^3 are removed)


@dataclass
class CascadeResult:
    labels: sitk.Image
    crop_box: Box
    crop_from_locator: bool
    working_shape: tuple[int, int, int]
    n_patches: int
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    organ_volumes_ml: dict[str, float] = field(default_factory=dict)

    def to_report(self) -> dict:
        spacing_zyx = self.labels.GetSpacing()[::-1]
        return {
            "image_size_xyz": list(self.labels.GetSize()),
            "spacing_xyz": [round(s, 4) for s in self.labels.GetSpacing()],
            "crop_box": {**self.crop_box.to_report(spacing_zyx), "from_locator": self.crop_from_locator},
            "working_shape_xyz": list(self.working_shape[::-1]),
            "n_patches": self.n_patches,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "organ_volumes_ml": {k: round(v, 2) for k, v in self.organ_volumes_ml.items()},
        }


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


class _Stopwatch:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """All cores this process may use by default (no 8-thread cap), for torch and SimpleITK."""
    n = int(threads) if threads else available_cores()
    torch.set_num_threads(n)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    return n


class FlareCascadePredictor:
    """One object per set of models, reusable across cases.

    >>> predictor = FlareCascadePredictor(locator_folder, organ_folder, fold="all")
    >>> labels = predictor.predict("case_0000.nii.gz")          # sitk.Image, uint8, the input's grid
    >>> result = predictor.run(image)                           # labels + timings, crop box, warnings, volumes
    >>> predictor.predict_files(["imagesTs"], "predictions", report="report.json")
    """

    def __init__(self, locator_folder: str | os.PathLike, organ_folder: str | os.PathLike, fold: str | int = "all",
                 checkpoint_name: str = CHECKPOINT, device: str | torch.device = "cpu", threads: int | None = None,
                 **options) -> None:
        set_threads(threads)
        self._configure(load_phase(locator_folder, fold, checkpoint_name, device),
                        load_phase(organ_folder, fold, checkpoint_name, device), **options)

    @classmethod
    def from_phases(cls, locator: Phase, organs: Phase, threads: int | None = None,
                    **options) -> "FlareCascadePredictor":
        self = cls.__new__(cls)
        if threads:
            set_threads(threads)
        self._configure(locator, organs, **options)
        return self

    @classmethod
    def from_networks(cls, locator: nn.Module | SegmentationModel, organs: nn.Module | SegmentationModel,
                      locator_normalization: CTNormalization, organ_normalization: CTNormalization,
                      locator_size: Sequence[int] = (128, 128, 128), organ_patch_size: Sequence[int] = (96, 96, 96),
                      organ_spacing: Sequence[float] = (2.0, 1.5, 1.5), device: str = "cpu",
                      **options) -> "FlareCascadePredictor":
        """Networks (nn.Modules, array order) or any `x, grid -> logits` callables, e.g. oracles in tests."""
        def wrap(m):
            return NetworkModel(m, device=device) if isinstance(m, nn.Module) else m
        return cls.from_phases(
            Phase(wrap(locator), locator_normalization, tuple(locator_size), None, 2),
            Phase(wrap(organs), organ_normalization, tuple(organ_patch_size), tuple(organ_spacing), NUM_CLASSES),
            **options)

    def _configure(self, locator: Phase, organs: Phase, margin_mm: float = DEFAULT_MARGIN_MM,
                   min_component_side: int = MIN_COMPONENT_SIDE, tile_min_overlap: float = 0.0,
                   progress: bool = True) -> None:
        if organs.spacing is None:
            raise ValueError("the organ phase needs a target spacing")
        self.locator, self.organs = locator, organs
        self.margin_mm, self.min_component_side = float(margin_mm), int(min_component_side)
        self.tile_min_overlap, self.progress = float(tile_min_overlap), progress

    # ------------------------------------------------------------------ single case
    def predict(self, image_or_path: sitk.Image | str | os.PathLike) -> sitk.Image:
        return self.run(image_or_path).labels

    def run(self, image_or_path: sitk.Image | str | os.PathLike) -> CascadeResult:
        timings: dict[str, float] = {}
        watch = _Stopwatch(timings)
        start = watch.last
        image = image_or_path if isinstance(image_or_path, sitk.Image) else read_image(image_or_path)
        if not isinstance(image_or_path, sitk.Image):
            watch.lap("read")
        array = sitk.GetArrayViewFromImage(image)  # (z, y, x), no copy
        warnings: list[str] = []
        box, from_locator = self._locate(image, array, watch, warnings)
        crop_labels, wshape, n_patches = self._segment(image, array, box, watch)
        out = np.zeros(array.shape, dtype=np.uint8)
        out[box.slices] = crop_labels
        labels = sitk.GetImageFromArray(out)
        labels.CopyInformation(image)
        voxel_ml = math.prod(image.GetSpacing()) / 1000.0
        counts = np.bincount(crop_labels.ravel(), minlength=NUM_CLASSES)
        volumes = {name: float(counts[i]) * voxel_ml for i, name in FLARE_ORGANS.items()}
        watch.lap("restore")
        timings["total"] = time.perf_counter() - start
        return CascadeResult(labels, box, from_locator, wshape, n_patches, timings, warnings, volumes)

    def _locate(self, image: sitk.Image, array: np.ndarray, watch: _Stopwatch,
                warnings: list[str]) -> tuple[Box, bool]:
        size = self.locator.patch_size
        x = resize_linear(array, size)  # resize first, then normalize: the small volume is cheap
        self.locator.normalization(x)
        watch.lap("locate_resize")
        grid = VoxelGrid.subgrid(image, *resize_offset_and_scale((0, 0, 0), array.shape, size), size)
        logits = self.locator.model(x[None, None], grid)
        foreground = (logits[0].argmax(0) > 0).cpu().numpy()
        watch.lap("locate_network")
        min_voxels = max(1, round(self.min_component_side ** 3 * math.prod(size) / math.prod(array.shape)))
        foreground = remove_small_components(foreground, min_voxels)
        bounds = foreground_bounds(foreground)
        spacing_zyx = image.GetSpacing()[::-1]
        if bounds is None:
            warnings.append("The locator found no abdomen (after removing components smaller than "
                            f"{self.min_component_side}^3 voxels): segmenting the whole volume.")
            box, found = Box.whole(array.shape), False
        else:
            margin = [math.ceil(self.margin_mm / s) for s in spacing_zyx]
            box, found = box_from_coarse(*bounds, size, array.shape, margin), True
        watch.lap("locate_postprocess")
        return box, found

    def _segment(self, image: sitk.Image, array: np.ndarray, box: Box,
                 watch: _Stopwatch) -> tuple[np.ndarray, tuple[int, int, int], int]:
        patch = self.organs.patch_size
        crop = array[box.slices]
        wshape = working_shape(crop.shape, image.GetSpacing()[::-1], self.organs.spacing)
        x = resize_linear(crop, wshape)
        self.organs.normalization(x)
        offset, scale = resize_offset_and_scale(box.start, crop.shape, wshape)
        padded = tuple(max(n, p) for n, p in zip(wshape, patch))
        before = tuple((p - n) // 2 for n, p in zip(wshape, padded))
        inner = tuple(slice(b, b + n) for b, n in zip(before, wshape))
        if padded != wshape:  # nnU-Net pads the normalized image with 0
            xp = torch.zeros(padded, dtype=x.dtype)
            xp[inner] = x
            x = xp
        watch.lap("segment_resample")

        def grid_of_tile(start: Sequence[int]) -> VoxelGrid:
            tile_offset = [o + (s - b) * k for o, s, b, k in zip(offset, start, before, scale)]
            return VoxelGrid.subgrid(image, tile_offset, scale, patch)

        labels = sliding_window_labels(x, patch, self.organs.model, grid_of_tile, self.tile_min_overlap,
                                       self.progress)[inner]
        n_patches = tile_count(padded, patch, self.tile_min_overlap)
        watch.lap("segment_network")
        labels = keep_largest_component_per_label(np.ascontiguousarray(labels))
        watch.lap("postprocess")
        return resize_nearest(labels, crop.shape), wshape, n_patches

    # ------------------------------------------------------------------ batches
    def predict_files(self, inputs: str | os.PathLike | Iterable[str | os.PathLike], output_folder: str | os.PathLike,
                      overwrite: bool = False, report: str | os.PathLike | None = None) -> BatchResult:
        """Predict every case of `inputs` into `output_folder` as <case>.nii.gz.

        Existing outputs are kept unless `overwrite` (nnU-Net's --continue_prediction). A failing case is recorded
        and the others go on. `report`: a JSON file with each case's stage times, crop box, warnings, organ volumes.
        """
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        cases = list_cases(inputs)
        output_folder = Path(output_folder)
        output_folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(output_folder)
        result = BatchResult()
        result.report = {"settings": self.settings(), "cases": {}, "failed": {}}
        for case in tqdm(cases, desc="cases", disable=not self.progress):
            target = case.output_path(output_folder)
            entry: dict = {"input": str(case.path), "output": str(target)}
            if target.exists() and not overwrite:
                entry["status"] = "skipped: output exists (use --overwrite to predict again)"
                result.skipped.append(case.name)
            else:
                try:
                    started = time.perf_counter()
                    case_result = self.run(case.path)
                    t = time.perf_counter()
                    write_image_atomic(case_result.labels, target)
                    case_result.timings["write"] = time.perf_counter() - t
                    case_result.timings["total"] = time.perf_counter() - started
                    entry.update(status="done", **case_result.to_report())
                    result.done.append(case.name)
                except Exception as e:  # one bad case must not stop the others
                    message = f"{type(e).__name__}: {e}"
                    entry.update(status="failed", error=message)
                    result.failed[case.name] = message
                    result.report["failed"][case.name] = message
                    tqdm.write(f"nnUNetv2_flare_predict: {case.name} failed: {message}")
            result.report["cases"][case.name] = entry
            if report:
                write_json_atomic(result.report, report)
        return result

    def settings(self) -> dict:
        return {"locator": self.locator.source, "organs": self.organs.source,
                "locator_size_xyz": list(self.locator.patch_size[::-1]),
                "organ_patch_size_xyz": list(self.organs.patch_size[::-1]),
                "organ_spacing_xyz": list(self.organs.spacing[::-1]), "margin_mm": self.margin_mm,
                "min_component_side": self.min_component_side, "tile_min_overlap": self.tile_min_overlap,
                "threads": torch.get_num_threads()}
