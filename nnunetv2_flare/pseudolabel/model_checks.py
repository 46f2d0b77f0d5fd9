"""The model a pseudo-label round is given, checked before anything is read or written: the files prediction needs
(`inference.models.loading.read_model_folder`, as `nnUNetv2_flare_predict` reads them), the organ role (not the
locator), the dataset's labels and its CT channel. Each refusal is one line (exit 2)."""
from __future__ import annotations

import os
from pathlib import Path

from nnunetv2_flare.errors import UsageError
from nnunetv2_flare.inference.models.loading import ModelFolder, label_names, number_of_classes, read_model_folder
from nnunetv2_flare.planning.abdomen_labels import ABDOMEN_LABELS
from nnunetv2_flare.pseudolabel.dataset_state import FlareDataset

ORGAN_PREPROCESSOR = "FlareOrganPreprocessor"


def check_organ_model(dataset: FlareDataset, model_folder: str | os.PathLike, fold: str,
                      checkpoint_name: str) -> ModelFolder:
    """The model folder, read; UsageError when it cannot make this dataset's organ labels."""
    from nnunetv2_flare.inference.models.ensemble import parse_folds

    folder = Path(model_folder)
    try:
        model = read_model_folder(folder, parse_folds(fold), checkpoint_name)
        number_of_classes(model.dataset_json)  # refuses region-based models
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"-m {folder}: {e}") from None
    role = model.configuration.get("flare_training_preprocessor")
    ours = label_names(model.dataset_json)
    if role == "FlareLocatorPreprocessor" or model.dataset_json.get("labels") == ABDOMEN_LABELS:
        raise UsageError(f"-m {folder} is a locator (background / abdomen, configuration {model.configuration_name}); "
                         f"pseudo-labels come from the organ model: give its folder, e.g. "
                         f"nnUNetTrainerFlareOrgans__FlarePlans__flare_organs")
    if role is not None and role != ORGAN_PREPROCESSOR:
        raise UsageError(f"-m {folder}: configuration {model.configuration_name} is prepared by {role}, not "
                         f"{ORGAN_PREPROCESSOR}; give an organ model (flare_organs or flare_organs_narrow)")
    expected = label_names(dataset.dataset_json())
    if ours != expected:
        differences = [f"{i}: {ours.get(i, '-')} (model) vs {expected.get(i, '-')} (dataset)"
                       for i in sorted(ours.keys() | expected.keys()) if ours.get(i) != expected.get(i)]
        raise UsageError(f"-m {folder}: the model's labels are not the dataset's ({'; '.join(differences[:5])}"
                         f"{'; ...' if len(differences) > 5 else ''}); give a model trained on these labels")
    channels, wanted = model.dataset_json.get("channel_names", {}), dataset.dataset_json().get("channel_names", {})
    if len(channels) != len(wanted) or len(channels) != 1:
        raise UsageError(f"-m {folder}: the model reads {len(channels)} input channel(s) {channels}, the dataset has "
                         f"{len(wanted)} {wanted}; the cascade's organ phase reads one CT channel")
    return model
