"""Step 1 of a round: the current organ model's labels for a training case.

The organ phase of the cascade runs on the bounding box of the case's current label (plus a margin), not behind
the locator: that is the crop the organ network was trained on (method.md, Phase-2 training), it is known exactly
for training cases, and a locator miss cannot wipe out a case. Everything else (resampling to the organ spacing,
normalization with the plans' statistics, sliding window, largest component per organ, back to the original grid)
is the cascade's own code (`nnunetv2_flare.inference.core.cascade.Cascade`).
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_flare.inference.core.settings import CASCADE_MARGIN_MM
from nnunetv2_flare.inference.geometry import Box
from nnunetv2_flare.masks import foreground_box, margin_voxels
from nnunetv2_flare.names import CHECKPOINT

# image, box (array order) -> labels of the box region, shape box.shape
OrganPredictor = Callable[[sitk.Image, Box], np.ndarray]


def label_box(label: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float = CASCADE_MARGIN_MM) -> Box:
    """Bounding box of the label's foreground plus `margin_mm` per side, clipped to the volume; whole volume if the
    label is empty (nothing to crop to: let the model look everywhere)."""
    bounds = foreground_box(label > 0, margin_voxels(margin_mm, spacing_zyx))
    return Box.whole(label.shape) if bounds is None else Box(*bounds)


def predict_case(predict_organs: OrganPredictor, image: sitk.Image, current_label: np.ndarray,
                 margin_mm: float = CASCADE_MARGIN_MM) -> np.ndarray:
    """Full-size prediction (zeros outside the label's box), in the label's dtype."""
    box = label_box(current_label, image.GetSpacing()[::-1], margin_mm)
    crop_labels = np.asarray(predict_organs(image, box))
    if crop_labels.shape != box.shape:
        raise ValueError(f"organ predictor returned shape {crop_labels.shape} for a box of shape {box.shape}")
    out = np.zeros(current_label.shape, dtype=current_label.dtype)
    out[box.slices] = crop_labels
    return out


def load_organ_predictor(model_folder: str | os.PathLike, fold: str | int = "all",
                         checkpoint_name: str = CHECKPOINT, device: str = "cpu",
                         threads: int | None = None, progress: bool = False) -> OrganPredictor:
    """The cascade's organ phase, loaded from an nnU-Net results folder, as an `OrganPredictor`."""
    from nnunetv2_flare.inference import CascadeSettings, FlareCascadePredictor, ModelSettings

    # the locator is not used: the crop comes from the training label
    models = ModelSettings(fold=fold, checkpoint_name=checkpoint_name, device=device, threads=threads, backend="torch")
    predictor = FlareCascadePredictor.organs_only(model_folder, models, CascadeSettings(progress=progress))
    return cascade_organ_predictor(predictor)


def cascade_organ_predictor(predictor) -> OrganPredictor:
    """A FlareCascadePredictor's Phase-2 step (`segment_box`: segment a given box) as an `OrganPredictor`."""
    return predictor.segment_box
