"""Re-exports only: nnUNetv2_train imports this folder's modules as top-level modules (nnUNet_extTrainer), so the
classes are defined in nnunetv2_flare.training, where spawned workers can import (unpickle) them."""
from nnunetv2_flare.training.demo_trainers import (  # noqa: F401 (nnUNetv2_flare_demo)
                                                   nnUNetTrainerFlareLocator_demo,
                                                   nnUNetTrainerFlareOrgans_demo,
                                                   nnUNetTrainerFlareOrgansAnyWindow_demo,
)
from nnunetv2_flare.training.locator_trainer import nnUNetTrainerFlareLocator
from nnunetv2_flare.training.organ_trainer import nnUNetTrainerFlareOrgans, nnUNetTrainerFlareOrgansAnyWindow
from nnunetv2_flare.training.short_run_trainers import (
                                                        nnUNetTrainerFlareLocator_5min,
                                                        nnUNetTrainerFlareLocator_debug,
                                                        nnUNetTrainerFlareOrgans_30min,
                                                        nnUNetTrainerFlareOrgans_debug,
                                                        nnUNetTrainerFlareOrgansAnyWindow_debug,
)

__all__ = ["nnUNetTrainerFlareLocator", "nnUNetTrainerFlareOrgans", "nnUNetTrainerFlareOrgansAnyWindow",
           "nnUNetTrainerFlareLocator_debug", "nnUNetTrainerFlareOrgans_debug",
           "nnUNetTrainerFlareOrgansAnyWindow_debug", "nnUNetTrainerFlareLocator_5min",
           "nnUNetTrainerFlareOrgans_30min"]
