"""Preprocessors for the training data of the two phases. This package's plan-and-preprocess command runs them.

The plans name nnU-Net's `DefaultPreprocessor` (nnU-Net looks preprocessors up only inside nnunetv2, and
`nnUNetv2_predict` must work on each phase on its own); the class that prepares the *training* data of a
configuration is named in its `flare_training_preprocessor` entry and looked up here.
"""
from __future__ import annotations

import os
import shutil
from typing import Sequence

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnunetv2_flare.masks import foreground_box, margin_voxels
from nnunetv2_flare.planning.abdomen_labels import abdomen_dataset_json, binarize

TRAINING_CROP_MARGIN_MM = 10.0  # mm per side around the labelled foreground of the organ network's training data


def _transposed(values: Sequence, transpose_forward: Sequence[int]) -> list:
    return [values[i] for i in transpose_forward]


class FlarePreprocessorBase(DefaultPreprocessor):
    """nnU-Net's `run`, except that one process works in this process: a spawned worker costs seconds of imports,
    more than a small dataset's whole preprocessing."""

    def run(self, dataset_name_or_id: int | str, configuration_name: str, plans_identifier: str,
            num_processes: int) -> None:
        if num_processes > 1:
            return super().run(dataset_name_or_id, configuration_name, plans_identifier, num_processes)
        dataset_name = maybe_convert_to_dataset_name(dataset_name_or_id)
        folder = os.path.join(nnUNet_preprocessed, dataset_name)
        plans_manager = PlansManager(os.path.join(folder, plans_identifier + ".json"))
        configuration_manager = plans_manager.get_configuration(configuration_name)
        dataset_json = load_json(os.path.join(folder, "dataset.json"))
        output_folder = os.path.join(folder, configuration_manager.data_identifier)
        shutil.rmtree(output_folder, ignore_errors=True)
        os.makedirs(output_folder)
        dataset = get_filenames_of_train_images_and_targets(os.path.join(nnUNet_raw, dataset_name), dataset_json)
        for case, files in tqdm(dataset.items(), desc="Preprocessing cases", disable=not self.show_progress_bar):
            self.run_case_save(os.path.join(output_folder, case), files["images"], files["label"], plans_manager,
                               configuration_manager, dataset_json)


class FlareLocatorPreprocessor(FlarePreprocessorBase):
    """Phase 1: the whole case, resized to exactly the patch size (128^3), then normalized; label -> abdomen.

    Resizing comes first (method.md): normalizing the full-size volume costs far more than normalizing 128^3, and
    the cascade does it in this order at inference, so training sees the same intensities. Each case gets its own
    spacing (original extent / 128); it is recorded in the case properties as `flare_locator_spacing`.
    There is no crop to the nonzero region: the locator sees the whole volume, as in the cascade.
    nnU-Net's export (validation) restores the original shape from the properties written here.
    """

    def run_case_npy(self, data: np.ndarray, seg: np.ndarray | None, properties: dict, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict | str):
        if isinstance(dataset_json, str):
            dataset_json = load_json(dataset_json)
        data = data.astype(np.float32)  # copy: never modify the caller's array
        transpose = plans_manager.transpose_forward
        data = data.transpose([0, *[i + 1 for i in transpose]])
        if seg is not None:
            assert data.shape[1:] == seg.transpose([0, *[i + 1 for i in transpose]]).shape[1:], \
                "image and segmentation differ in shape; run with --verify_dataset_integrity to find the case"
            seg = binarize(seg.transpose([0, *[i + 1 for i in transpose]]))
        original_spacing = _transposed(properties["spacing"], transpose)
        shape = tuple(int(s) for s in data.shape[1:])
        target_shape = [int(s) for s in configuration_manager.patch_size]
        case_spacing = [sp * s / t for sp, s, t in zip(original_spacing, shape, target_shape)]

        # export reverts "crop then resample": an identity crop, so the prediction goes back to the full shape
        properties["shape_before_cropping"] = shape
        properties["bbox_used_for_cropping"] = [[0, s] for s in shape]
        properties["shape_after_cropping_and_before_resampling"] = shape
        properties["flare_locator_spacing"] = case_spacing

        data = configuration_manager.resampling_fn_data(data, target_shape, original_spacing, case_spacing)
        if seg is not None:
            seg = configuration_manager.resampling_fn_seg(seg, target_shape, original_spacing, case_spacing)
        data = self._normalize(data, seg if seg is not None else np.zeros_like(data, dtype=np.int8),
                               configuration_manager, plans_manager.foreground_intensity_properties_per_channel)
        if seg is None:
            return data, None, properties
        label_manager = plans_manager.get_label_manager(abdomen_dataset_json(dataset_json))
        properties["class_locations"] = self._sample_foreground_locations(seg, label_manager.foreground_labels,
                                                                          verbose=self.verbose)
        return data, seg.astype(np.int8, copy=False), properties


class FlareOrganPreprocessor(FlarePreprocessorBase):
    """Phase 2: crop each training case to the bounding box of its labelled foreground plus a margin in mm
    (`flare_foreground_margin_mm` in the configuration), then nnU-Net's default path (crop to nonzero, normalize,
    resample to the configuration's spacing).

    Training thus sees what the cascade's locator crop gives (the paper crops to the labelled foreground). The case
    properties describe the crop relative to the full image, so nnU-Net's validation export pastes the prediction
    into a zero volume of the original size, as the cascade does.
    """

    default_margin_mm = TRAINING_CROP_MARGIN_MM

    def run_case_npy(self, data: np.ndarray, seg: np.ndarray | None, properties: dict, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict | str):
        if seg is None or not np.any(seg > 0):
            # no labels (test case or empty reference): nothing to crop to, keep the whole case
            return super().run_case_npy(data, seg, properties, plans_manager, configuration_manager, dataset_json)
        assert data.shape[1:] == seg.shape[1:], \
            "image and segmentation differ in shape; run with --verify_dataset_integrity to find the case"
        margin_mm = float(configuration_manager.configuration.get("flare_foreground_margin_mm",
                                                                  self.default_margin_mm))
        full_shape = data.shape[1:]
        fg_bbox = list(zip(*foreground_box(seg[0] > 0, margin_voxels(margin_mm, properties["spacing"]))))
        slicer = (slice(None), *[slice(lo, hi) for lo, hi in fg_bbox])
        data, seg = data[slicer], seg[slicer]

        data, seg, properties = super().run_case_npy(data, seg, properties, plans_manager, configuration_manager,
                                                     dataset_json)
        # the parent recorded its nonzero crop relative to our crop; make both relative to the full image
        transpose = plans_manager.transpose_forward
        fg_bbox_t = _transposed(fg_bbox, transpose)
        properties["bbox_used_for_cropping"] = [[off + lo, off + hi] for (off, _), (lo, hi) in
                                                zip(fg_bbox_t, properties["bbox_used_for_cropping"])]
        properties["shape_before_cropping"] = tuple(int(s) for s in _transposed(full_shape, transpose))
        properties["flare_foreground_bbox"] = [list(b) for b in fg_bbox_t]
        return data, seg, properties


TRAINING_PREPROCESSORS: dict[str, type[DefaultPreprocessor]] = {
    cls.__name__: cls for cls in (FlareLocatorPreprocessor, FlareOrganPreprocessor, DefaultPreprocessor)
}


def training_preprocessor_class(configuration: dict) -> type[DefaultPreprocessor]:
    name = configuration.get("flare_training_preprocessor", configuration["preprocessor_name"])
    if name not in TRAINING_PREPROCESSORS:
        raise ValueError(f"unknown training preprocessor {name!r} in the plans; known: "
                         f"{sorted(TRAINING_PREPROCESSORS)}")
    return TRAINING_PREPROCESSORS[name]
