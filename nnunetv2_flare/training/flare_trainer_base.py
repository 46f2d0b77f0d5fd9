"""What both phases share: the paper's optimisation (AdamW lr 3e-4, weight decay 1e-5, cosine annealing over 150
epochs). Loss (Dice + cross-entropy 1:1), batch size (from the plans), data augmentation and deep supervision are
nnU-Net's defaults. Deep supervision stays on: the networks' small heads then all receive gradients, which DDP
requires (nnU-Net gives the coarsest head a tiny weight for that reason)."""
from __future__ import annotations

from typing import Sequence

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_flare.training.lr_schedulers import CosineAnnealingScheduler

PAPER_INITIAL_LR = 3e-4
PAPER_WEIGHT_DECAY = 1e-5
PAPER_NUM_EPOCHS = 150


class nnUNetTrainerFlareBase(nnUNetTrainer):
    """Base of the FLARE trainers; train `nnUNetTrainerFlareLocator` or `nnUNetTrainerFlareOrgans`."""

    # the `flare_training_preprocessor` values of the plans' configurations this trainer accepts (None: any)
    expected_training_preprocessors: tuple[str, ...] | None = None
    warmup_epochs: int = 0  # linear warm-up before the cosine annealing (the paper has none)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._check_configuration()
        self.initial_lr = PAPER_INITIAL_LR
        self.weight_decay = PAPER_WEIGHT_DECAY
        self.num_epochs = PAPER_NUM_EPOCHS

    def _check_configuration(self) -> None:
        expected = self.expected_training_preprocessors
        found = self.configuration_manager.configuration.get("flare_training_preprocessor")
        if expected is not None and found not in expected:
            raise ValueError(
                f"{self.__class__.__name__} trains configurations prepared by {' / '.join(expected)}, but "
                f"configuration {self.configuration_name!r} of plans {self.plans_manager.plans_name!r} is prepared by "
                f"{found}. Use -tr nnUNetTrainerFlareLocator with flare_locator and -tr nnUNetTrainerFlareOrgans with "
                f"flare_organs / flare_organs_narrow (plans FlarePlans from nnUNetv2_flare_plan_and_preprocess).")

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, CosineAnnealingScheduler]:
        optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, CosineAnnealingScheduler(optimizer, self.initial_lr, self.num_epochs,
                                                   warmup_steps=self.warmup_epochs)


def shorten(trainer: nnUNetTrainerFlareBase, num_epochs: int, iterations_per_epoch: int, val_iterations: int,
            batch_size: int, patch_size: Sequence[int] | None = None) -> None:
    """Change the run length on the trainer's own copy of its configuration (the plans saved with the results keep
    the real values). The batch size goes through the configuration so that nnU-Net's DDP split still applies."""
    trainer.num_epochs = num_epochs
    trainer.num_iterations_per_epoch = iterations_per_epoch
    trainer.num_val_iterations_per_epoch = val_iterations
    configuration = trainer.configuration_manager.configuration
    configuration["batch_size"] = min(batch_size, configuration["batch_size"])
    if patch_size is not None:
        configuration["patch_size"] = [int(p) for p in patch_size]
