"""Short variants of the FLARE trainers for smoke tests and CPU runs. Same networks (from the plans' configuration),
loss, optimizer and schedule shape; fewer and smaller steps.

`_debug`: 2 epochs of 2 iterations, batch 2, no test-time mirroring in validation; the organ variants (fixed and
any-window) also train on 48^3 patches (its network is unchanged and works on any size divisible by 16) and validate
on the first 2 validation cases by name only. Minutes on a laptop CPU.
`_5min` / `_30min`: for CPU runs; 10 iterations of batch 2 per epoch, as many epochs as fit 5 / 30 minutes of
training (re-planned after every epoch from the real epoch times, so the cosine schedule still runs to its end), at
most the paper's 150; `--c` resumes with what is left of the budget (time_boxed.py).
"""
from __future__ import annotations

import torch

from nnunetv2_flare.training.flare_trainer_base import shorten
from nnunetv2_flare.training.locator_trainer import nnUNetTrainerFlareLocator
from nnunetv2_flare.training.organ_trainer import nnUNetTrainerFlareOrgans, nnUNetTrainerFlareOrgansAnyWindow
from nnunetv2_flare.training.time_boxed import TimeBoxedTraining


class _NoTestTimeMirroring:
    """Validation (and nnUNetv2_predict on the result) without mirroring: 1 pass per tile instead of 8."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, mirror_axes


class nnUNetTrainerFlareLocator_debug(_NoTestTimeMirroring, nnUNetTrainerFlareLocator):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        shorten(self, num_epochs=2, iterations_per_epoch=2, val_iterations=1, batch_size=2)


class _FewValidationCases:
    """nnU-Net's final validation slides over every validation case at the organ spacing: a 64 x 64 phantom's organs
    are ~380 48^3 tiles, about a minute on two cores, so with a few cases it was most of a debug run."""

    validation_cases = 2

    def do_split(self) -> tuple[list[str], list[str]]:
        train, validation = super().do_split()
        return train, sorted(validation)[:self.validation_cases]


class nnUNetTrainerFlareOrgans_debug(_FewValidationCases, _NoTestTimeMirroring, nnUNetTrainerFlareOrgans):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        shorten(self, num_epochs=2, iterations_per_epoch=2, val_iterations=1, batch_size=2, patch_size=(48, 48, 48))


class nnUNetTrainerFlareOrgansAnyWindow_debug(_FewValidationCases, _NoTestTimeMirroring,
                                              nnUNetTrainerFlareOrgansAnyWindow):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        shorten(self, num_epochs=2, iterations_per_epoch=2, val_iterations=1, batch_size=2, patch_size=(48, 48, 48))


class nnUNetTrainerFlareLocator_5min(TimeBoxedTraining, nnUNetTrainerFlareLocator):
    time_budget_s = 5 * 60.0


class nnUNetTrainerFlareOrgans_30min(TimeBoxedTraining, nnUNetTrainerFlareOrgans):
    time_budget_s = 30 * 60.0
