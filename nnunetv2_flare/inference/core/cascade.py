"""The two-phase CPU cascade: locate the abdomen on the whole CT at 128^3, segment the crop at organ spacing.

Steps (docs/method.md):
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
   nearest neighbour (or interpolated class scores, restore='linear'); pasted into a zero volume with exactly the
   input's geometry (uint8).
Opt-in, follow_organs=N: where the organ labels reach a face of the box, up to N rounds of growing the box on those
faces and segmenting the new slabs (box_following.py).
Before step 1 every input is checked and repaired (inputs/checks.py: refusals with a one-line reason, NaN, padding,
dtype) and its voxels are permuted / flipped into one canonical orientation (orientation.py, no resampling): the
orientation the models were trained in (RAS where their plans read with NibabelIOWithReorient, else LPS); the
labels are mapped back exactly, so flipped or permuted copies of a scan get the same result. Each network's
transpose_forward is applied inside its model wrapper.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence
from warnings import warn

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.inference.core.box_following import (
    extension_slabs,
    grow_box,
    half_patch_voxels,
    outside_mask,
    relative,
    touched_faces,
)
from nnunetv2_flare.inference.core.organ_statistics import organ_statistics, subset_ids
from nnunetv2_flare.inference.core.postprocessing import (
    keep_connected_to,
    keep_largest_component_per_label,
    remove_small_components,
)
from nnunetv2_flare.inference.core.result import CascadeResult
from nnunetv2_flare.inference.core.settings import MODEL_ORIENTATION, WINDOW_MODES, CascadeSettings, ModelSettings
from nnunetv2_flare.inference.core.sliding_window import sliding_window_labels, sliding_window_scores, tile_count
from nnunetv2_flare.inference.geometry import (
    SLAB_SLICES,
    Box,
    VoxelGrid,
    box_from_coarse,
    resize_labels_linear_slabs,
    resize_linear,
    resize_nearest_slabs,
    resize_offset_and_scale,
    working_shape,
)
from nnunetv2_flare.inference.inputs.api_inputs import as_api_input, labels_as
from nnunetv2_flare.inference.inputs.checks import PreparedInput, prepare_input
from nnunetv2_flare.inference.inputs.nifti_transforms import NIBABEL_READERS, take_models_transform
from nnunetv2_flare.inference.inputs.orientation import models_orientation
from nnunetv2_flare.inference.inputs.reading import read_image
from nnunetv2_flare.inference.models.backends import SegmentationModel, check_precision, resolve_backend
from nnunetv2_flare.inference.models.backends.torch import NetworkModel
from nnunetv2_flare.inference.models.digests import short_digest
from nnunetv2_flare.inference.models.ensemble import FoldEnsemble, parse_folds
from nnunetv2_flare.inference.models.loading import CTNormalization, Phase, load_phase
from nnunetv2_flare.labels import FLARE_ORGANS, NUM_CLASSES
from nnunetv2_flare.masks import foreground_box, margin_voxels
from nnunetv2_flare.planning.templates import cascade_sizes
from nnunetv2_flare.window_shapes import WindowRange, fitted_window

if TYPE_CHECKING:  # torch is imported only where a PyTorch model runs (backends/torch.py)
    from torch import nn

class _Stopwatch:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings, self.last = timings, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.last
        self.last = now


def fitted_window_range(organs: Phase, window: str, window_voxels: int | None = None) -> WindowRange | None:
    """The window range the organ windows are fitted within, or None for tiles of the training patch
    (`CascadeSettings.window`), its voxels capped at `window_voxels`. Fitting windows for a model trained on its
    patch alone warns once: it was never shown other shapes, and loses accuracy on them (docs/performance.md)."""
    if window not in WINDOW_MODES:
        raise ValueError(f"window must be one of {', '.join(WINDOW_MODES)}, not {window!r}")
    if window == "tiles" or (window == "auto" and organs.window_range is None):
        return None
    window_range = organs.window_range
    if window_range is None:
        warn("window='fitted' on an organ model trained on its patch alone: it never saw other window shapes "
             "and may lose accuracy; train it with nnUNetTrainerFlareOrgansAnyWindow, or use window='tiles'",
             UserWarning, stacklevel=3)
        window_range = WindowRange.around(organs.patch_size, organs.stride, organs.batch_size)
    if window_voxels is None or window_voxels >= window_range.max_voxels:
        return window_range
    smallest = math.prod(window_range.minimum)
    if window_voxels < smallest:
        raise ValueError(f"window_voxels {window_voxels} is below the model's smallest window "
                         f"{' x '.join(map(str, window_range.minimum[::-1]))} (x y z: {smallest} voxels)")
    return replace(window_range, max_voxels=window_voxels)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """All cores this process may use by default (no 8-thread cap), for SimpleITK and, once it is loaded, torch."""
    n = int(threads) if threads else available_cores()
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    return n


class Cascade:
    """The cascade on one case at a time; one object per set of models, reusable across cases (batches of files:
    `FlareCascadePredictor`, predictor.py).

    >>> predictor = FlareCascadePredictor.from_folders(locator_folder, organ_folder, ModelSettings(fold=[0, 1]))
    >>> labels = predictor.predict("case_0000.nii.gz")          # sitk.Image, uint8, the input's grid
    >>> labels = predictor.predict(array_zyx, spacing=(0.8, 0.8, 2.5))   # NumPy in, NumPy out (or nibabel)
    >>> result = predictor.run(image)                           # labels + timings, crop box, warnings, volumes
    Settings: `ModelSettings` (how the networks load and run) and `CascadeSettings` (how a case is segmented),
    settings.py.
    """

    def __init__(self, locator: Phase | None, organs: Phase, settings: CascadeSettings | None = None,
                 loaded_with: ModelSettings | None = None) -> None:
        """The cascade of two loaded phases (`locator` None: Phase 2 alone, for `segment_box`). `loaded_with`: the
        model settings the phases were loaded with (`from_folders`), for the report; None for phases built in
        memory."""
        settings = settings or CascadeSettings()
        if organs.spacing is None:
            raise ValueError("the organ phase needs a target spacing")
        if settings.restore == "linear" and not hasattr(organs.model, "scores"):
            if not hasattr(organs.model, "logits"):
                raise ValueError("restore='linear' needs an organ model that gives class scores (a network, or a "
                                 "model with a `logits` or `scores` method); this one gives labels only")
            organs = replace(organs, model=FoldEnsemble([organs.model]))
        self.cascade_settings, self.model_settings = settings, loaded_with
        self.window_range = fitted_window_range(organs, settings.window, settings.window_voxels)
        self.locator, self.organs = locator, organs
        self.model_label_names: dict[int, str] = dict(organs.label_names or FLARE_ORGANS)  # id -> organ name
        self.roi_subset = subset_ids(self.model_label_names, settings.roi_subset) if settings.roi_subset else None
        self.label_names = {i: n for i, n in self.model_label_names.items()  # the labels this predictor writes
                            if self.roi_subset is None or i in self.roi_subset}
        orientation = settings.orientation
        if orientation == MODEL_ORIENTATION:
            orientation = models_orientation(organs.orientation, locator.orientation if locator else None)
        self.orientation = orientation  # None: process the array as read
        # whose choice of a NIfTI's qform / sform the organ model was trained with (nifti_transforms.py)
        self.nifti_reader = "nibabel" if organs.reader in NIBABEL_READERS else "itk"
        self.models_identity = short_digest(locator.identity if locator else "", organs.identity)

    @classmethod
    def from_folders(cls, locator_folder: str | os.PathLike, organ_folder: str | os.PathLike,
                     models: ModelSettings | None = None, settings: CascadeSettings | None = None) -> Cascade:
        """Both phases from nnU-Net results folders (plans.json, dataset.json, fold_<f>/<checkpoint>), as
        nnUNetv2_predict reads a model folder."""
        models, settings = models or ModelSettings(), settings or CascadeSettings()
        n_threads = int(models.threads) if models.threads else available_cores()
        backend = resolve_backend(models.backend, models.device)
        check_precision(models.precision, backend)
        locator = load_phase(locator_folder, models.fold, models.checkpoint_name, models.device, backend=backend,
                             threads=n_threads, tta=models.tta)
        organs = load_phase(organ_folder, models.fold, models.checkpoint_name, models.device, backend=backend,
                            threads=n_threads, precision=models.precision, tta=models.tta,
                            shift_tta=models.shift_tta, class_scores=settings.restore == "linear")
        predictor = cls(locator, organs, settings, loaded_with=replace(models, backend=backend))
        set_threads(n_threads)  # after loading: a PyTorch model imports torch
        return predictor

    @classmethod
    def organs_only(cls, organ_folder: str | os.PathLike, models: ModelSettings | None = None,
                    settings: CascadeSettings | None = None) -> Cascade:
        """Phase 2 alone, no locator: for `segment_box`, where the crop is known (pseudo-labels crop to the case's
        current label). `models` as in `from_folders`, with PyTorch by default."""
        models, settings = models or ModelSettings(backend="torch"), settings or CascadeSettings()
        if models.threads:
            set_threads(models.threads)
        backend = resolve_backend(models.backend, models.device)
        organs = load_phase(organ_folder, models.fold, models.checkpoint_name, models.device, backend=backend,
                            threads=models.threads, precision=models.precision, tta=models.tta,
                            shift_tta=models.shift_tta, class_scores=settings.restore == "linear")
        return cls(None, organs, settings, loaded_with=replace(models, backend=backend))

    @classmethod
    def from_networks(cls, locator: nn.Module | SegmentationModel, organs: nn.Module | SegmentationModel,
                      locator_normalization: CTNormalization, organ_normalization: CTNormalization,
                      locator_size: Sequence[int] | None = None, organ_patch_size: Sequence[int] | None = None,
                      organ_spacing: Sequence[float] | None = None, device: str = "cpu",
                      settings: CascadeSettings | None = None) -> Cascade:
        """Networks (nn.Modules, array order, logits out) or any `x, grid -> labels` callables on NumPy arrays
        (see SegmentationModel), e.g. oracles in tests. Sizes and spacing not given are the paper's (FlarePlans'
        template)."""
        from torch import nn

        locator_size, organ_patch_size, organ_spacing = cascade_sizes(locator_size, organ_patch_size, organ_spacing)

        def wrap(m):
            return NetworkModel(m, device=device) if isinstance(m, nn.Module) else m
        return cls(Phase(wrap(locator), locator_normalization, tuple(locator_size), None, 2),
                   Phase(wrap(organs), organ_normalization, tuple(organ_patch_size), tuple(organ_spacing),
                         NUM_CLASSES), settings)

    # ------------------------------------------------------------------ single case
    def predict(self, image, spacing: Sequence[float] | None = None, origin: Sequence[float] | None = None,
                direction: Sequence[float] | None = None):
        """Labels of one CT, in the kind it came as (api_inputs.py): a path or SimpleITK image -> SimpleITK image;
        a nibabel image -> nibabel image; a NumPy array (z, y, x) with spacing=(x, y, z) -> NumPy array."""
        given = as_api_input(image, spacing, origin, direction)
        return labels_as(given.kind, self.run(given.image if given.image is not None else given.path).labels,
                         given.original)

    def run(self, image_or_path, spacing: Sequence[float] | None = None, origin: Sequence[float] | None = None,
            direction: Sequence[float] | None = None) -> CascadeResult:
        """Labels (a SimpleITK image on the input's grid) and everything measured on the way. Inputs as
        `predict`."""
        timings: dict[str, float] = {}
        watch = _Stopwatch(timings)
        start = watch.last
        given = as_api_input(image_or_path, spacing, origin, direction)
        image = given.image if given.image is not None else read_image(given.path)
        transforms, warnings = None, []
        if given.path is not None:
            image, transforms, warning = take_models_transform(image, given.path, self.nifti_reader)
            warnings += [warning] if warning else []
            watch.lap("read")
        name = given.path.name if given.path is not None else "input"
        # an image made here (read from a file, or from a NumPy / nibabel input) is repaired in place, so a huge scan
        # is not held twice; a SimpleITK image of the caller is left as it was
        prepared = prepare_input(image, self.orientation, name, in_place=given.kind != "sitk")
        image = prepared.image  # checked, repaired, canonical orientation; the input is no longer referenced here
        watch.lap("check_input")
        array = sitk.GetArrayViewFromImage(image)  # (z, y, x), no copy
        warnings += prepared.warnings
        box, from_locator = self._locate(image, array, watch, warnings)
        working_labels, scores, wshape, windows = self._segment(image, array, box, watch)
        windows = [windows]
        located = box
        if self.cascade_settings.follow_organs:
            box_labels, box, slab_windows = self._follow(image, array, box, working_labels, scores, watch)
            windows += slab_windows
            slabs = ((z, box_labels[z:z + SLAB_SLICES])
                     for z in range(0, box_labels.shape[0], SLAB_SLICES))
        else:
            slabs = self._resized_slabs(working_labels, scores, box.shape)
        labels, counts = self._restore(prepared, slabs, box)
        del slabs, working_labels, scores
        voxel_ml = math.prod(image.GetSpacing()) / 1000.0
        volumes = {name: float(counts[i]) * voxel_ml for i, name in self.label_names.items()}
        watch.lap("restore")
        statistics = None
        if self.cascade_settings.statistics:  # inside the crop box: every labelled voxel is there
            crop_labels = prepared.canonical_labels(labels)[box.slices]
            statistics = organ_statistics(array[box.slices], crop_labels, self.label_names, voxel_ml)
            watch.lap("statistics")
        timings["total"] = time.perf_counter() - start
        return CascadeResult(
            labels=labels, crop_box=prepared.box_on_input(box, array.shape), crop_from_locator=from_locator,
            working_shape=wshape, n_patches=sum(count for _, count in windows), timings=timings, warnings=warnings,
            organ_volumes_ml=volumes, notes=list(prepared.notes), orientation=prepared.report(),
            organ_spacing_input_zyx=prepared.values_on_input(self.organs.spacing), statistics=statistics,
            canonical_image=image, labels_to_canonical=prepared.canonical_labels,
            located_box=prepared.box_on_input(located, array.shape) if located != box else None,
            windows=windows, nifti_transforms=transforms)

    def _restore(self, prepared: PreparedInput, slabs: Iterable[tuple[int, np.ndarray]],
                 box: Box) -> tuple[sitk.Image, np.ndarray]:
        """The labels on the input grid, and the voxel count of each label value (index: the value).

        `slabs` (first slice, labels) cover the crop box; they are pasted straight into a zero label image of the
        input's grid, so that image is the only full-size array: at 512 x 512 x 1500 the resized crop, the zero volume
        around it, its copy into an image and a 64-bit bincount came to 4.6 GB."""
        labels = prepared.new_label_image()
        counts = np.zeros(max(self.model_label_names) + 1, dtype=np.int64)
        for first, part in slabs:
            if self.roi_subset is not None:
                part[~np.isin(part, self.roi_subset)] = 0
            counts += np.bincount(part.ravel(), minlength=counts.size)[:counts.size]
            z0 = box.start[0] + first
            slab = Box((z0, *box.start[1:]), (z0 + part.shape[0], *box.stop[1:]))
            prepared.paste_labels(labels, slab, part)
        return labels, counts

    def _resized_slabs(self, working_labels: np.ndarray, scores: np.ndarray | None,
                       shape: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        if scores is None:
            return resize_nearest_slabs(working_labels, shape)
        return resize_labels_linear_slabs(working_labels, scores, shape)

    def _box_labels(self, working_labels: np.ndarray, scores: np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
        return np.concatenate([part for _, part in self._resized_slabs(working_labels, scores, shape)])

    def segment_box(self, image: sitk.Image, box: Box) -> np.ndarray:
        """Phase 2 alone on `box` (array order z, y, x) of `image`, taken as it is (no input checks, no
        reorientation): resample to the organ spacing, normalize, sliding window, largest component per organ, back
        to the box's grid. Labels (uint8) of shape box.shape."""
        labels, scores, _, _ = self._segment(image, sitk.GetArrayViewFromImage(image), box, _Stopwatch({}))
        return self._box_labels(labels, scores, box.shape)

    def _follow(self, image: sitk.Image, array: np.ndarray, box: Box, working_labels: np.ndarray,
                scores: np.ndarray | None, watch: _Stopwatch
                ) -> tuple[np.ndarray, Box, list[tuple[tuple[int, ...], int]]]:
        """The labels of `box` on the input grid, grown (box_following.py) for up to `follow_organs` rounds while
        they reach a face of the box that is not the scan's edge: (labels of the final box, the final box, the
        windows of the new slabs)."""
        labels = self._box_labels(working_labels, scores, box.shape)
        half_patch = half_patch_voxels(self.organs.patch_size, self.organs.spacing, image.GetSpacing()[::-1])
        windows = []
        for _ in range(self.cascade_settings.follow_organs):
            faces = touched_faces(labels, box, array.shape)
            if not faces:
                break
            grown = grow_box(box, faces, half_patch, array.shape)
            merged = np.zeros(grown.shape, dtype=np.uint8)
            merged[relative(box, grown)] = labels
            for slab in extension_slabs(box, grown, faces, half_patch):
                slab_labels, slab_scores, _, slab_windows = self._segment(image, array, slab, watch)
                part = self._box_labels(slab_labels, slab_scores, slab.shape)
                new = outside_mask(slab, box)  # what the box held stays as it was
                merged[relative(slab, grown)][new] = part[new]
                windows.append(slab_windows)
            labels, box = keep_connected_to(merged, relative(box, grown)), grown
            watch.lap("follow_organs")
        return labels, box, windows

    def _locate(self, image: sitk.Image, array: np.ndarray, watch: _Stopwatch,
                warnings: list[str]) -> tuple[Box, bool]:
        size = self.locator.patch_size
        x = resize_linear(array, size)  # resize first, then normalize: the small volume is cheap
        self.locator.normalization(x)
        watch.lap("locate_resize")
        grid = VoxelGrid.subgrid(image, *resize_offset_and_scale((0, 0, 0), array.shape, size), size)
        foreground = np.asarray(self.locator.model(x[None, None], grid)) > 0
        watch.lap("locate_network")
        # the 20^3 rule, capped per axis at the axis length: a thin scan's abdomen spans its few slices
        side_voxels = math.prod(min(self.cascade_settings.min_component_side, n) for n in array.shape)
        min_voxels = max(1, round(side_voxels * math.prod(size) / math.prod(array.shape)))
        foreground = remove_small_components(foreground, min_voxels)
        bounds = foreground_box(foreground)
        spacing_zyx = image.GetSpacing()[::-1]
        if bounds is None:
            warnings.append("The locator found no abdomen (after removing components smaller than "
                            f"{self.cascade_settings.min_component_side}^3 voxels): segmenting the whole volume.")
            box, found = Box.whole(array.shape), False
        else:
            margin = margin_voxels(self.cascade_settings.margin_mm, spacing_zyx)
            box, found = box_from_coarse(*bounds, size, array.shape, margin), True
        watch.lap("locate_postprocess")
        return box, found

    def _segment(self, image: sitk.Image, array: np.ndarray, box: Box,
                 watch: _Stopwatch) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int],
                                             tuple[tuple[int, ...], int]]:
        """Labels (uint8) of `box` at the organ network's working resolution, their class scores (restore='linear';
        else None), the working shape and the windows (shape, count)."""
        crop = array[box.slices]
        wshape = working_shape(crop.shape, image.GetSpacing()[::-1], self.organs.spacing)
        patch = self.organs.patch_size if self.window_range is None else fitted_window(wshape, self.window_range)
        x = resize_linear(crop, wshape)
        self.organs.normalization(x)
        offset, scale = resize_offset_and_scale(box.start, crop.shape, wshape)
        padded = tuple(max(n, p) for n, p in zip(wshape, patch))
        before = tuple((p - n) // 2 for n, p in zip(wshape, padded))
        inner = tuple(slice(b, b + n) for b, n in zip(before, wshape))
        if padded != wshape:  # nnU-Net pads the normalized image with 0
            x = np.pad(x, [(b, p - n - b) for b, n, p in zip(before, wshape, padded)])
        watch.lap("segment_resample")

        def grid_of_tile(start: Sequence[int]) -> VoxelGrid:
            tile_offset = [o + (s - b) * k for o, s, b, k in zip(offset, start, before, scale)]
            return VoxelGrid.subgrid(image, tile_offset, scale, patch)

        scores = None
        overlap, progress = self.cascade_settings.tile_min_overlap, self.cascade_settings.progress
        if self.cascade_settings.restore == "linear":
            labels, scores = sliding_window_scores(x, patch, self.organs.model, grid_of_tile, overlap, progress)
            scores = scores[(slice(None), *inner)]
        else:
            labels = sliding_window_labels(x, patch, self.organs.model, grid_of_tile, overlap, progress)
        labels = labels[inner]
        del x  # the float32 working volume (0.17 GB at 512 x 512 x 1500) is not needed from here on
        n_patches = tile_count(padded, patch, overlap)
        watch.lap("segment_network")
        labels = keep_largest_component_per_label(np.ascontiguousarray(labels))
        watch.lap("postprocess")
        return labels, scores, wshape, (tuple(patch), n_patches)

    def settings(self) -> dict:
        """Every setting this predictor runs with, for the JSON report and the request record of its label files."""
        s, models = self.cascade_settings, self.model_settings
        return {"locator": self.locator.source, "organs": self.organs.source,
                "organ_backend": models.backend if models else "injected",
                "organ_precision": getattr(self.organs.model, "precision", "fp32"),
                "locator_size_xyz": list(self.locator.patch_size[::-1]),
                "organ_patch_size_xyz": list(self.organs.patch_size[::-1]),
                "organ_spacing_xyz": list(self.organs.spacing[::-1]), "margin_mm": s.margin_mm,
                "orientation": self.orientation or "as read", "nifti_reader": self.nifti_reader,
                "folds": list(parse_folds(models.fold)) if models else [],
                "tta": models.tta if models else False, "shift_tta": models.shift_tta if models else False,
                "restore": s.restore, "follow_organs": s.follow_organs,
                "window": "tiles" if self.window_range is None else "fitted",
                "window_range": None if self.window_range is None else {
                    "minimum_xyz": list(self.window_range.minimum[::-1]),
                    "maximum_xyz": list(self.window_range.maximum[::-1]), "max_voxels": self.window_range.max_voxels,
                    "trained": self.organs.window_range is not None, "window_voxels": s.window_voxels},
                "min_component_side": s.min_component_side, "tile_min_overlap": s.tile_min_overlap,
                "roi_subset": [self.model_label_names[i] for i in self.roi_subset] if self.roi_subset else None,
                "threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
                "labels": {str(i): name for i, name in self.label_names.items()}}
