"""Default model names of the cascade (kept free of heavy imports so that `nnUNetv2_flare_predict -h` is instant)."""
LOCATOR_TRAINER = "nnUNetTrainerFlareLocator"
LOCATOR_CONFIGURATION = "flare_locator"
ORGAN_TRAINER = "nnUNetTrainerFlareOrgans"
ORGAN_CONFIGURATION = "flare_organs"
PLANS = "FlarePlans"
CHECKPOINT = "checkpoint_final.pth"
DEFAULT_MARGIN_MM = 15.0  # crop margin around the located abdomen (cascade) or the current label (pseudo-labels)
