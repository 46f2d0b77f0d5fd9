"""FLARE's DSC / NSD metrics (`metrics`, the rules in its docstring) and folder evaluation (`evaluate_folders`,
`nnUNetv2_flare_evaluate`), matching FLARE's official evaluation script (docs/evaluation.md)."""
from nnunetv2_flare.evaluation.evaluate_folders import evaluate_folders
from nnunetv2_flare.evaluation.metrics import evaluate_case, evaluate_organ, normalized_surface_dice, surface_distances

__all__ = ["evaluate_case", "evaluate_folders", "evaluate_organ", "normalized_surface_dice", "surface_distances"]
