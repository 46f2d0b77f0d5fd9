"""Time-boxed variants of the FLARE trainers for `nnUNetv2_flare_demo` (CPU runs of minutes).

Same networks (from the plans' configuration), loss, optimizer and augmentation as the full trainers; what changes
is the run length. `nnUNetv2_train` builds trainers without extra arguments, so the run length comes from
environment variables (the demo sets them for its subprocesses; unset, the defaults below apply):

    nnUNetFlare_demo_deadline     Unix time by which training must end (default: none)
    nnUNetFlare_demo_max_epochs   upper bound on the number of epochs (default 1000)
    nnUNetFlare_demo_iterations   training iterations per epoch (default 10)
    nnUNetFlare_demo_batch_size   batch size, at most the plans' value (default 2)
    nnUNetFlare_demo_lr           AdamW learning rate (default 1e-3; the paper's 3e-4 is for 150 epochs of 250
                                  iterations, too slow a start for the ~150 iterations a demo gets)

With a deadline, the number of epochs is re-planned after every epoch from the measured epoch time, so the cosine
schedule anneals to (nearly) zero when time runs out rather than being cut off at a high learning rate.
nnU-Net's final validation (sliding window over every training case) is skipped: the demo scores the two-phase
cascade on held-out cases instead.
"""
from __future__ import annotations

import os
import time

import torch

from nnunetv2_flare.training.flare_trainer_base import nnUNetTrainerFlareBase
from nnunetv2_flare.training.locator_trainer import nnUNetTrainerFlareLocator
from nnunetv2_flare.training.organ_trainer import nnUNetTrainerFlareOrgans

DEADLINE_ENV = "nnUNetFlare_demo_deadline"
MAX_EPOCHS_ENV = "nnUNetFlare_demo_max_epochs"
ITERATIONS_ENV = "nnUNetFlare_demo_iterations"
BATCH_SIZE_ENV = "nnUNetFlare_demo_batch_size"
LR_ENV = "nnUNetFlare_demo_lr"
DEMO_INITIAL_LR = 1e-3
# what saving the final checkpoint and shutting down the data loaders takes, kept free before the deadline
END_RESERVE_S = 5.0


def _env_number(name: str, default: float, cast: type = int) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a {cast.__name__}") from None


def epochs_that_fit(epochs_done: int, seconds_per_epoch: float, seconds_left: float, max_epochs: int) -> int:
    """Total number of epochs when `epochs_done` are done and each further one takes `seconds_per_epoch`."""
    more = int(max(0.0, seconds_left) // max(seconds_per_epoch, 1e-6))
    return max(epochs_done, min(max_epochs, epochs_done + more))


class _BudgetSpent(Exception):
    pass


class _TimeBoxed:
    """Mixin for nnUNetTrainerFlareBase subclasses: run length from the environment, stops at the deadline."""

    def _apply_demo_run_length(self: nnUNetTrainerFlareBase) -> None:
        self.demo_deadline = _env_number(DEADLINE_ENV, None, float)
        self.demo_max_epochs = int(_env_number(MAX_EPOCHS_ENV, 1000))
        self.num_epochs = self.demo_max_epochs
        self.num_iterations_per_epoch = int(_env_number(ITERATIONS_ENV, 10))
        self.num_val_iterations_per_epoch = 1
        self.initial_lr = float(_env_number(LR_ENV, DEMO_INITIAL_LR, float))
        configuration = self.configuration_manager.configuration
        configuration["batch_size"] = min(int(_env_number(BATCH_SIZE_ENV, 2)), configuration["batch_size"])
        self._demo_first_epoch_start: float | None = None

    def on_epoch_start(self) -> None:
        if self._demo_first_epoch_start is None:
            self._demo_first_epoch_start = time.time()
        super().on_epoch_start()

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # increments current_epoch
        if self.demo_deadline is not None:
            # the first epoch carries the data loaders' warm-up; later epochs are timed on their own average
            elapsed = time.time() - self._demo_first_epoch_start
            per_epoch = elapsed / self.current_epoch
            left = self.demo_deadline - END_RESERVE_S - time.time()
            self.num_epochs = epochs_that_fit(self.current_epoch, per_epoch, left, self.demo_max_epochs)
            self.lr_scheduler.max_steps = self.num_epochs
            self.print_to_log_file(f"demo time box: {self.current_epoch} epochs done, {per_epoch:.1f} s each, "
                                   f"{max(left, 0):.0f} s left -> {self.num_epochs} epochs in total")
        if self.current_epoch >= self.num_epochs:
            raise _BudgetSpent

    def run_training(self) -> None:
        # nnU-Net's loop iterates over a range fixed at its start; leaving it early is how a shorter plan ends it
        try:
            super().run_training()
        except _BudgetSpent:
            self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("demo trainer: nnU-Net's final validation is skipped (the demo evaluates the "
                               "cascade on held-out cases)", also_print_to_console=True)


class nnUNetTrainerFlareLocator_demo(_TimeBoxed, nnUNetTrainerFlareLocator):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._apply_demo_run_length()


class nnUNetTrainerFlareOrgans_demo(_TimeBoxed, nnUNetTrainerFlareOrgans):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._apply_demo_run_length()
