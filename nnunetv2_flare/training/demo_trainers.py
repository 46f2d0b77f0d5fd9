"""Variants of the FLARE trainers for `nnUNetv2_flare_demo` (CPU runs of minutes).

Same networks (from the plans' configuration), loss, optimizer and schedule shape as the full trainers. What differs,
and why (measurements in docs/demo.md):
- the run length is a number of iterations passed by the demo through the environment (time_boxed.py), so that
  the same command trains the same model on a quiet or a busy machine; a wall-clock deadline is optional;
- seeded (`nnUNetFlare_demo_seed`): with in-process data loading (`nnUNet_n_proc_DA=0`, which the demo sets) the
  same command gives the same model up to the CPU's floating-point non-determinism;
- no data augmentation: the demo draws fresh phantoms instead, which costs seconds, while nnU-Net's spatial
  augmentation took about half of each iteration's CPU time on two cores. No mirroring either: a mirrored left
  kidney would still be labelled "left";
- a higher learning rate with a linear warm-up (the paper's 3e-4 is for 150 x 250 iterations of batch 6);
- nnU-Net's final validation is skipped: the demo scores the two-phase cascade on held-out cases instead;
- progress.png is drawn once, at the end (nnU-Net draws it with matplotlib after every epoch, a few percent of a
  demo epoch's time).
"""
from __future__ import annotations

import random
from typing import List, Tuple, Union

import numpy as np
import torch
from nnunetv2.training.logging.nnunet_logger import MetaLogger
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_flare.names import SEED_ENV, THREADS_ENV
from nnunetv2_flare.training.any_window import AnyWindowTraining
from nnunetv2_flare.training.locator_trainer import nnUNetTrainerFlareLocator
from nnunetv2_flare.training.organ_trainer import nnUNetTrainerFlareOrgans
from nnunetv2_flare.training.time_boxed import TimeBoxedTraining, env_number

# the rates that learnt fastest in the demo's few iterations (docs/demo.md, "The recipe")
DEMO_ORGAN_LR = 1e-2
DEMO_LOCATOR_LR = 3e-3


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators: network initialisation and nnU-Net's patch sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class PlotAtEndLogger(MetaLogger):
    """nnU-Net's logger, whose per-epoch progress plot is left to `plot_final`."""

    def plot_progress_png(self, output_folder: str) -> None:
        pass

    def plot_final(self, output_folder: str) -> None:
        super().plot_progress_png(output_folder)


class _DemoTraining(TimeBoxedTraining):
    time_box_max_epochs = 1000

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        seed = env_number(SEED_ENV, None)
        if seed is not None:
            seed_everything(int(seed))
        # nnUNetv2_train uses every core on the CPU; on a machine busy with other work fewer threads avoid OpenMP's
        # stalls (each parallel region waits for its slowest thread, which may be descheduled)
        threads = env_number(THREADS_ENV, None)
        if threads is not None:
            torch.set_num_threads(int(threads))
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.logger = PlotAtEndLogger(self.output_folder, self.logger.resume)

    def on_train_end(self) -> None:
        super().on_train_end()
        if self.local_rank == 0:
            self.logger.plot_final(self.output_folder)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, _, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        # without spatial augmentation the loader need not read a larger patch to rotate from
        return rotation, dummy_2d, self.configuration_manager.patch_size, None

    @staticmethod
    def get_training_transforms(patch_size: Union[np.ndarray, Tuple[int]], rotation_for_DA, deep_supervision_scales,
                                mirror_axes, do_dummy_2d_data_aug: bool, use_mask_for_norm: List[bool] = None,
                                is_cascaded: bool = False, foreground_labels=None, regions=None,
                                ignore_label: int = None):
        # what validation batches get: the deep-supervision targets, nothing random
        return nnUNetTrainer.get_validation_transforms(deep_supervision_scales, is_cascaded, foreground_labels,
                                                       regions, ignore_label)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("demo trainer: nnU-Net's final validation is skipped (the demo evaluates the "
                               "cascade on held-out cases)", also_print_to_console=True)


class nnUNetTrainerFlareLocator_demo(_DemoTraining, nnUNetTrainerFlareLocator):
    time_box_lr = DEMO_LOCATOR_LR
    warmup_epochs = 1


class nnUNetTrainerFlareOrgans_demo(_DemoTraining, nnUNetTrainerFlareOrgans):
    time_box_lr = DEMO_ORGAN_LR
    warmup_epochs = 2


class nnUNetTrainerFlareOrgansAnyWindow_demo(AnyWindowTraining, nnUNetTrainerFlareOrgans_demo):
    """The demo's organ trainer with a window shape drawn per batch (any_window.py)."""
