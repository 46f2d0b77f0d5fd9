"""Time-boxed variants of the FLARE trainers for `nnUNetv2_flare_demo` (CPU runs of minutes).

Same networks (from the plans' configuration), loss, optimizer and augmentation as the full trainers; the run length
comes from the demo through the environment (see time_boxed.py). Organ network learning rate 6e-3: the paper's 3e-4
is for 150 epochs of 250 iterations. In 1,500-iteration runs on the demo's phantoms (narrow network, batch 2, on a GPU
to run them side by side), the mean pseudo-Dice of the last three epochs was 0.09-0.13 at 1e-3 (32^3 patches, stochastic
depth 0.1: the earlier demo recipe), 0.26-0.40 at 3e-3 (same), and with 48^3 patches and no stochastic depth
0.56-0.59 at 3e-3 and 0.60-0.66 at 6e-3.
nnU-Net's final validation (sliding window over every training case) is skipped: the demo scores the two-phase
cascade on held-out cases instead.
"""
from __future__ import annotations

from nnunetv2_flare.training.locator_trainer import nnUNetTrainerFlareLocator
from nnunetv2_flare.training.organ_trainer import nnUNetTrainerFlareOrgans
from nnunetv2_flare.training.time_boxed import TimeBoxedTraining

DEMO_ORGAN_LR = 6e-3
DEMO_LOCATOR_LR = 1e-3  # the locator's ~30 iterations of the earlier demos found the abdomen at this rate


class _DemoTimeBox(TimeBoxedTraining):
    time_box_max_epochs = 1000

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("demo trainer: nnU-Net's final validation is skipped (the demo evaluates the "
                               "cascade on held-out cases)", also_print_to_console=True)


class nnUNetTrainerFlareLocator_demo(_DemoTimeBox, nnUNetTrainerFlareLocator):
    time_box_lr = DEMO_LOCATOR_LR


class nnUNetTrainerFlareOrgans_demo(_DemoTimeBox, nnUNetTrainerFlareOrgans):
    time_box_lr = DEMO_ORGAN_LR
