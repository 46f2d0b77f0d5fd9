"""Phase 2: 14 classes (background + 13 organs) on 96^3 patches at 1.5 x 1.5 x 2 mm, trained on cases cropped to
their labelled foreground (FlareOrganPreprocessor)."""
from __future__ import annotations

import torch

from nnunetv2_flare.training.any_window import AnyWindowTraining
from nnunetv2_flare.training.flare_trainer_base import nnUNetTrainerFlareBase


class nnUNetTrainerFlareOrgans(nnUNetTrainerFlareBase):
    """Paper defaults; 5 of every 6 patches centred on foreground (the paper's 5:1 positive:negative crops)."""

    expected_training_preprocessors = ("FlareOrganPreprocessor",)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.oversample_foreground_percent = 5 / 6


class nnUNetTrainerFlareOrgansAnyWindow(AnyWindowTraining, nnUNetTrainerFlareOrgans):
    """The paper's trainer with a window shape drawn per batch (any_window.py): predicted with windows fitted to
    the crop instead of 96^3 tiles (`nnUNetv2_flare_predict --window`)."""
