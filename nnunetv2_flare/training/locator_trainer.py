"""Phase 1: background / abdomen (the union of all organs) on the whole case resized to 128^3."""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from nnunetv2.configuration import default_num_processes
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from torch import distributed as dist

from nnunetv2_flare.planning.abdomen_labels import (
    ABDOMEN_REFERENCE_FOLDER,
    abdomen_dataset_json,
    write_abdomen_references,
)
from nnunetv2_flare.training.flare_trainer_base import nnUNetTrainerFlareBase


def scoring_hint(abdomen_references: str, model_folder: str) -> str:
    """How to score the locator beyond one fold: nnU-Net's cross-validation commands cannot be pointed at other
    references, and they read the locator's label 1 in the 14-class labels as 'abdomen'."""
    return (f"To score several folds together, copy the label files of their validation folders into one FOLDER and "
            f"run nnUNetv2_evaluate_folder {abdomen_references} FOLDER -djfile {model_folder}/dataset.json -pfile "
            f"{model_folder}/plans.json --chill. nnUNetv2_find_best_configuration and "
            f"nnUNetv2_accumulate_crossval_results compare the locator with the 14-class labels (its abdomen "
            f"against the liver): their Dice and postprocessing mean nothing for it.")


class nnUNetTrainerFlareLocator(nnUNetTrainerFlareBase):
    """Paper defaults, two classes.

    The trainer works with a reduced dataset.json (labels {"background": 0, "abdomen": 1}); nnU-Net saves it into
    the results folder, so `nnUNetv2_predict` writes background / abdomen maps. The preprocessed labels are binary
    (FlareLocatorPreprocessor). Validation writes predictions at the original image size and compares them with
    the binarized references in <nnUNet_preprocessed>/<dataset>/gt_segmentations_abdomen/ (nnU-Net's own
    validation would compare with the 14-class gt_segmentations/).
    """

    expected_training_preprocessors = ("FlareLocatorPreprocessor",)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, abdomen_dataset_json(dataset_json), device)

    @property
    def abdomen_reference_folder(self) -> str:
        return os.path.join(self.preprocessed_dataset_folder_base, ABDOMEN_REFERENCE_FOLDER)

    def _update_abdomen_references(self) -> None:
        # refresh from gt_segmentations/: labels may have changed since preprocessing (pseudo-label rounds)
        if self.local_rank == 0:
            write_abdomen_references(os.path.join(self.preprocessed_dataset_folder_base, "gt_segmentations"),
                                     self.abdomen_reference_folder, self.plans_manager.image_reader_writer_class,
                                     self.dataset_json["file_ending"], show_progress=False)
        if self.is_ddp:
            dist.barrier()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self._update_abdomen_references()
        self.set_deep_supervision_enabled(False)
        self.network.eval()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=True, device=self.device, verbose=False,
                                    verbose_preprocessing=False, allow_tqdm=False)
        predictor.manual_initialization(self.network, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, self.__class__.__name__,
                                        self.inference_allowed_mirroring_axes)
        output_folder = os.path.join(self.output_folder, "validation")
        os.makedirs(output_folder, exist_ok=True)
        _, val_keys = self.do_split()
        if self.is_ddp:
            val_keys = val_keys[self.local_rank::dist.get_world_size()]
        dataset_val = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        for key in dataset_val.identifiers:
            self.print_to_log_file(f"predicting {key}")
            data, _, _, properties = dataset_val.load_case(key)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # blosc2 arrays are read-only views
                data = torch.from_numpy(np.asarray(data[:]))
            logits = predictor.predict_sliding_window_return_logits(data).cpu()
            # the locator's logits are only 128^3: exporting in this process costs less than a worker pool
            export_prediction_from_logits(logits, properties, self.configuration_manager, self.plans_manager,
                                          self.dataset_json, os.path.join(output_folder, key), save_probabilities)
        if self.is_ddp:
            dist.barrier()
        if self.local_rank == 0:
            metrics = compute_metrics_on_folder(
                self.abdomen_reference_folder, output_folder, os.path.join(output_folder, "summary.json"),
                self.plans_manager.image_reader_writer_class(), self.dataset_json["file_ending"],
                self.label_manager.foreground_labels, self.label_manager.ignore_label, chill=True,
                num_processes=max(1, min(default_num_processes, len(val_keys))))
            for label in metrics["mean"]:
                self.logger.log_summary(f"final_val/class_{label}_dice", metrics["mean"][label]["Dice"])
            self.logger.log_summary("final_val/foreground_dice", metrics["foreground_mean"]["Dice"])
            self.print_to_log_file("Validation complete", also_print_to_console=True)
            self.print_to_log_file("Mean Validation Dice (abdomen vs. binarized reference): ",
                                   metrics["foreground_mean"]["Dice"], also_print_to_console=True)
            self.print_to_log_file(scoring_hint(self.abdomen_reference_folder, self.output_folder_base),
                                   also_print_to_console=True)
        self.set_deep_supervision_enabled(True)
        compute_gaussian.cache_clear()
