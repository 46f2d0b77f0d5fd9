"""FLARE's DSC / NSD metrics (`metrics`) and folder evaluation (`evaluate_folders`, `nnUNetv2_flare_evaluate`)."""
from nnunetv2_flare.evaluation.evaluate_folders import evaluate_folders
from nnunetv2_flare.evaluation.metrics import evaluate_case, evaluate_organ, normalized_surface_dice

__all__ = ["evaluate_case", "evaluate_folders", "evaluate_organ", "normalized_surface_dice"]
