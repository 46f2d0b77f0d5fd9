"""Experiment planner that fills the FlarePlans template from the dataset fingerprint.

Everything the method fixes (patch sizes, the organ spacing, the networks) comes from the template; the dataset
contributes the locator's nominal spacing, median sizes, the reader/writer and the CT intensity statistics.

NIfTI datasets are read with nnU-Net's `NibabelIOWithReorient`: every case reaches the networks in one voxel
orientation (RAS), as the cascade gives it at inference (it reads the orientation from the plans, see
inference/models/loading.py), and nnU-Net writes its validation labels back in each file's own orientation. Read
as stored, a dataset whose headers differ in flips teaches the networks a left kidney on both sides.
"""
from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
from nnunetv2.utilities.json_export import recursive_fix_for_json_export

from nnunetv2_flare.atomic_io import write_json_atomic
from nnunetv2_flare.names import PLANS
from nnunetv2_flare.planning.templates import load_plans_template


def require_single_ct_channel(dataset_json: dict, dataset_name: str) -> None:
    """The method and its normalization are for CT: one channel that nnU-Net normalizes with CTNormalization."""
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    schemes = [get_normalization_scheme(name).__name__ for name in channels.values()]
    if schemes != ["CTNormalization"]:
        raise ValueError(f"FlarePlans expects one CT channel (dataset.json: \"channel_names\": {{\"0\": \"CT\"}}); "
                         f"{dataset_name} has {channels}")


class FlarePlanner(ExperimentPlanner):
    """`plan_experiment()` writes <nnUNet_preprocessed>/<dataset>/FlarePlans.json.

    Re-running keeps the intensity statistics of an existing plans file (models trained with it depend on them);
    pass `overwrite_plans=True` to replace them with the current fingerprint's.
    """

    def __init__(self, dataset_name_or_id: str | int, plans_name: str = PLANS,
                 overwrite_plans: bool = False, **kwargs) -> None:
        # the organ spacing is fixed in array order (z, y, x): a transpose would move it to other axes
        super().__init__(dataset_name_or_id, plans_name=plans_name, suppress_transpose=True, **kwargs)
        self.overwrite_plans = overwrite_plans
        self.template = load_plans_template(plans_name)

    def determine_reader_writer(self) -> type[BaseReaderWriter]:
        """NibabelIOWithReorient for NIfTI unless dataset.json names a reader (`overwrite_image_reader_writer`)."""
        if "overwrite_image_reader_writer" not in self.dataset_json and \
                self.dataset_json["file_ending"] in NibabelIOWithReorient.supported_file_endings:
            return NibabelIOWithReorient
        return super().determine_reader_writer()

    @property
    def plans_file(self) -> Path:
        return Path(nnUNet_preprocessed) / self.dataset_name / f"{self.plans_identifier}.json"

    def locator_spacing(self, patch_size: list[int]) -> list[float]:
        """Median over cases of the spacing that resizes the whole case to the patch size. The locator's own
        preprocessing uses each case's value; this one serves nnU-Net's own commands (nnUNetv2_predict), which
        resample every case to one spacing and slide a 128^3 window over it."""
        spacings = np.asarray(self.dataset_fingerprint["spacings"], dtype=float)
        shapes = np.asarray(self.dataset_fingerprint["shapes_before_crop"]
                            if "shapes_before_crop" in self.dataset_fingerprint
                            else self.dataset_fingerprint["shapes_after_crop"], dtype=float)
        per_case = spacings * shapes / np.asarray(patch_size, dtype=float)
        return [float(v) for v in np.median(per_case, axis=0)]

    def median_shape_at(self, spacing: list[float]) -> list[int]:
        shapes = [compute_new_shape(s, sp, spacing) for sp, s in
                  zip(self.dataset_fingerprint["spacings"], self.dataset_fingerprint["shapes_after_crop"])]
        return [int(round(v)) for v in np.median(np.asarray(shapes), axis=0)]

    def fill_configuration(self, name: str, configuration: dict) -> dict:
        configuration = deepcopy(configuration)
        if "inherits_from" in configuration:
            return configuration  # resolved by nnU-Net from the parent
        if configuration.get("spacing") is None:
            configuration["spacing"] = self.locator_spacing(configuration["patch_size"])
        if configuration.get("median_image_size_in_voxels") is None:
            # the locator's training data are exactly patch-sized; other configurations resample to a spacing
            configuration["median_image_size_in_voxels"] = (
                list(configuration["patch_size"]) if configuration.get("flare_training_preprocessor") ==
                "FlareLocatorPreprocessor" else self.median_shape_at(configuration["spacing"]))
        schemes, use_mask = self.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        configuration["normalization_schemes"], configuration["use_mask_for_norm"] = schemes, use_mask
        return configuration

    def intensity_statistics(self) -> dict:
        new = self.dataset_fingerprint["foreground_intensity_properties_per_channel"]
        if self.overwrite_plans or not self.plans_file.is_file():
            return new
        old = load_json(str(self.plans_file)).get("foreground_intensity_properties_per_channel")
        if old is None:
            return new
        if old != new:
            print(f"Keeping the intensity statistics of the existing {self.plans_file.name}: models trained with it "
                  f"normalize with them. The current fingerprint's statistics differ; to adopt them (and retrain), "
                  f"rerun with --overwrite_plans.")
        return old

    def plan_experiment(self) -> dict:
        require_single_ct_channel(self.dataset_json, self.dataset_name)
        plans = deepcopy(self.template)
        median_spacing = np.median(np.asarray(self.dataset_fingerprint["spacings"]), axis=0)
        median_shape = np.median(np.asarray(self.dataset_fingerprint["shapes_after_crop"]), axis=0)
        plans.update({
            "dataset_name": self.dataset_name,
            "plans_name": self.plans_identifier,
            "original_median_spacing_after_transp": [float(v) for v in median_spacing],
            "original_median_shape_after_transp": [int(round(v)) for v in median_shape],
            "image_reader_writer": self.determine_reader_writer().__name__,
            "transpose_forward": [0, 1, 2],
            "transpose_backward": [0, 1, 2],
            "experiment_planner_used": self.__class__.__name__,
            "foreground_intensity_properties_per_channel": self.intensity_statistics(),
        })
        plans["configurations"] = {name: self.fill_configuration(name, cfg)
                                   for name, cfg in self.template["configurations"].items()}
        write_json_atomic(self.dataset_json, Path(nnUNet_preprocessed) / self.dataset_name / "dataset.json")
        self.plans = plans
        self.save_plans(plans)
        return plans

    def save_plans(self, plans: dict) -> None:
        recursive_fix_for_json_export(plans)
        if self.plans_file.is_file():
            # like nnU-Net: configurations a user added to the plans file survive a re-run
            old = load_json(str(self.plans_file))
            for name, cfg in old.get("configurations", {}).items():
                plans["configurations"].setdefault(name, cfg)
        self.plans_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(plans, self.plans_file)
        print(f"Plans were saved to {self.plans_file}")
